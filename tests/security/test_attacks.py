"""The adversarial suite: every attack in the catalogue, then the host is checked.

Runs against the shared daemon's backend over HTTP; the Docker backend reuses it unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.client import SyncClient
from tests.daemon import Daemon
from tests.listeners import counting
from tests.security.attacks import ATTACKS, Attack

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def client(backend_client: SyncClient) -> SyncClient:
    return backend_client


WATCHED = ["/etc/passwd", "/etc/shadow", "/etc/hostname", "/usr/bin/python3", "/bin/bash"]


def digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.errno}"


@pytest.fixture(scope="module")
def host_state() -> Iterator[dict[str, str]]:
    """Host files, hostname and clock before the suite; compared after it."""
    before = {p: digest(p) for p in WATCHED}
    before["hostname"] = socket.gethostname()
    yield before
    after = {p: digest(p) for p in WATCHED}
    after["hostname"] = socket.gethostname()
    assert after == before
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_is_contained(
    client: SyncClient, attack: Attack, host_state: dict[str, str]
) -> None:
    limits = {"wall_time_s": 10, **attack.limits}
    result = client.run(language=attack.language, code=attack.source(), limits=limits)
    expected = (attack.status,) if isinstance(attack.status, str) else attack.status
    assert result.status in expected, (attack.contained_by, result)
    assert "BREACH" not in result.stdout, (attack.contained_by, result.stdout)
    if attack.blocked:
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("BLOCKED")]
        assert len(lines) == attack.blocked, (attack.contained_by, result.stdout, result.stderr)
    for needle in attack.expect:
        assert needle in result.stdout, (needle, result.stdout, result.stderr)
    assert client.health().status == "ok"


def test_catalogue_covers_every_class() -> None:
    classes = {a.cls for a in ATTACKS}
    assert classes >= {
        "exhaustion",
        "secrets",
        "write-outside",
        "links",
        "fds",
        "privileges",
        "ptrace",
        "signals",
        "namespaces",
        "kernel",
        "sockets",
        "dev",
        "host-state",
        "network",
    }
    assert len(ATTACKS) >= 40


def test_collect_never_follows_planted_links(client: SyncClient) -> None:
    code = "ln -s /etc/passwd passwd.txt; ln -s / rootdir; echo ok > plain.txt"
    result = client.run(language="bash", code=code, collect=["*.txt", "rootdir/**", "**/passwd"])
    assert [f.path for f in result.files] == ["plain.txt"]
    assert base64.b64decode(result.files[0].content) == b"ok\n"


def test_symlink_swap_race_during_collect(client: SyncClient) -> None:
    """A racer flipping a file and a link to a host secret: never collected as the secret."""
    code = (
        "( setsid bash -c 'while :; do ln -sfn /etc/passwd f.txt; rm -f f.txt; "
        "echo decoy > f.txt; done' & ) ; sleep 0.3"
    )
    for _ in range(5):
        result = client.run(language="bash", code=code, collect=["*.txt"])
        for f in result.files:
            assert base64.b64decode(f.content) in (b"decoy\n", b""), f


def test_abusive_run_does_not_harm_a_concurrent_normal_run(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with daemon.aclient() as client:
            bombs = [
                client.run(
                    language="bash",
                    code=":(){ :|:& };:; sleep 30",
                    limits={"pids": 64, "wall_time_s": 3},
                ),
                client.run(
                    code="x = []\nwhile True: x.append(bytearray(1 << 24))",
                    limits={"memory_mib": 128, "wall_time_s": 3},
                ),
                client.run(
                    code="import sys\nwhile True: sys.stdout.write('z' * 65536)",
                    limits={"wall_time_s": 3},
                ),
                client.run(code="while True: pass", limits={"wall_time_s": 3}),
            ]
            abuse = [asyncio.ensure_future(b) for b in bombs]
            await asyncio.sleep(0.5)
            normal = await client.run(code="print(sum(range(1000)))")
            assert normal.status == "ok"
            assert normal.stdout == "499500\n"
            statuses = [r.status for r in await asyncio.gather(*abuse)]
            assert statuses == ["timeout", "memory_limit", "output_limit", "timeout"]

    asyncio.run(scenario())


@pytest.fixture
def host_unix_sockets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An abstract and a filesystem unix socket listening on the host; nobody may connect."""
    name = f"sandboxd-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + name)
    abstract.listen(4)
    path = str(tmp_path_factory.mktemp("sock") / "host.sock")
    fs = socket.socket(socket.AF_UNIX)
    fs.bind(path)
    fs.listen(4)
    with counting(abstract, fs) as hits:
        yield name, path
    assert hits == []


def test_host_unix_sockets_unreachable(
    client: SyncClient, host_unix_sockets: tuple[str, str]
) -> None:
    name, path = host_unix_sockets
    abstract = "\0" + name
    code = (
        "import socket, errno\n"
        f"for addr in ({abstract!r}, {path!r}):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(addr); print('BREACH', repr(addr))\n"
        "    except OSError as e:\n        print('BLOCKED', errno.errorcode[e.errno])\n"
    )
    result = client.run(code=code)
    assert result.stdout.count("BLOCKED") == 2, result


def test_udp_to_host_loopback_never_arrives(client: SyncClient) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    port = sock.getsockname()[1]
    code = (
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(20): s.sendto(b'leak', ('127.0.0.1', {port}))\nprint('sent')\n"
    )
    try:
        assert client.run(code=code).stdout == "sent\n"
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with pytest.raises(TimeoutError):
                sock.recvfrom(64)
    finally:
        sock.close()
