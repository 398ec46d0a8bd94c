"""A test host in a network namespace this test run creates (veth to the host), and a daemon
whose egress proxy resolves the test names to it. Nothing else is ever targeted."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.netns import NetHost, namespace_host, wheel

HERE = Path(__file__).parent


@pytest.fixture(scope="package")
def testhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetHost]:
    packages = tmp_path_factory.mktemp("wheel")
    tiny = wheel(packages, "tinypkg", {"tinypkg/__init__.py": "VALUE = 42\n"}, [])

    def servers(inside: list[str], ip: str) -> list[list[str]]:
        return [[*inside, sys.executable, str(HERE / "testhost.py"), ip, str(tiny)]]

    with namespace_host("sbd", 213, servers, [8080]) as host:
        yield host


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
