"""A test host in a network namespace of the test's own: a veth pair, one /24, servers
started inside. Nothing else is ever targeted; everything is removed on exit, whatever
happened. Used by the egress tests and coder's package-index tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class NetHost:
    ip: str  # the test host's address (inside its namespace)
    net: str  # its /24, for CIDR rules


def wheel(
    directory: Path, name: str, files: dict[str, str], requires: list[str], entry_points: str = ""
) -> Path:
    """A pure-Python wheel of `name` 1.0 holding `files`, requiring `requires`."""
    info = f"{name}-1.0.dist-info"
    if entry_points:
        files = {**files, f"{info}/entry_points.txt": entry_points}
    meta = f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents = {
        **{k: v.encode() for k, v in files.items()},
        f"{info}/METADATA": meta.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sandboxd-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    out = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def wait_for(ip: str, port: int) -> None:
    for _ in range(100):  # bounded (~10 s)
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the test host did not listen on {ip}:{port}")


@contextlib.contextmanager
def namespace_host(
    tag: str, octet: int, servers: Callable[[list[str], str], list[list[str]]], ports: list[int]
) -> Iterator[NetHost]:
    """A namespace `<tag><pid>` with 10.<octet>.k.2/24; `servers(inside, ip)` gives the argv
    of each server (`inside` runs a command in the namespace), `ports` those to wait for."""
    pid = os.getpid()
    k = pid % 200 + 20
    ns, host_if, ns_if = f"{tag}x{pid}", f"{tag}h{pid % 100000}", f"{tag}n{pid % 100000}"
    ip_host, ip_ns = f"10.{octet}.{k}.1", f"10.{octet}.{k}.2"
    sh("ip", "netns", "add", ns)
    started: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{ip_host}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip_ns}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for argv in servers(["ip", "netns", "exec", ns], ip_ns):
            started.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in ports:
            wait_for(ip_ns, port)
        yield NetHost(ip_ns, f"10.{octet}.{k}.0/24")
    finally:
        for server in started:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
