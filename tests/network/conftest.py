"""A test host in a network namespace this test run creates (veth to the host), and a daemon
whose egress proxy resolves the test names to it. Nothing else is ever targeted."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import Daemon

HERE = Path(__file__).parent


@dataclass
class NetHost:
    ip: str
    net: str


def make_wheel(directory: Path) -> Path:
    path = directory / "tinypkg-1.0-py3-none-any.whl"
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: sandboxd-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="package")
def testhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetHost]:
    k = os.getpid() % 200 + 20
    ns, host_if, ns_if = (
        f"sbdt{os.getpid()}",
        f"sbh{os.getpid() % 100000}",
        f"sbn{os.getpid() % 100000}",
    )
    ip_host, ip_ns = f"10.213.{k}.1", f"10.213.{k}.2"
    sh("ip", "netns", "add", ns)
    server = None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{ip_host}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip_ns}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        wheel = make_wheel(tmp_path_factory.mktemp("wheel"))
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(HERE / "testhost.py"),
                ip_ns,
                str(wheel),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import urllib.request

        for _ in range(100):  # bounded wait (~10 s) for the test host to answer
            try:
                urllib.request.urlopen(f"http://{ip_ns}:8080/hello", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the test host did not come up")
        yield NetHost(ip_ns, f"10.213.{k}.0/24")
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="package")
def egress_daemon(workdir: Path, testhost: NetHost) -> Iterator[Daemon]:
    names = ["index.test", "api.example.org", "example.org", "unlisted.test", "mirror.test"]
    hosts = {name: [testhost.ip] for name in names} | {
        "evil.test": ["127.0.0.1"],
        "trusted-loop.test": ["127.0.0.1"],
    }
    # the operator trusts two names to resolve privately; only mirror.test leads somewhere
    # private (trusted-loop.test leads to loopback, which stays refused)
    trusted = ["mirror.test", "Trusted-Loop.test."]
    egress = {"hosts": hosts, "max_rules": 8, "trusted_private_names": trusted}
    d = Daemon(workdir, "egress", egress=egress).start()
    yield d
    assert d.stop() == 0
