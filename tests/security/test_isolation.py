"""What a run can see and do: its own namespaces, no host paths, no network but loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from sandboxd.client import SyncClient
from tests.daemon import Daemon
from tests.listeners import counting

pytestmark = pytest.mark.usefixtures("no_leftovers")

PROBE = r"""
import json, os, socket
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return line.split(':', 1)[1].strip()
print(json.dumps({
    'uid': os.getuid(), 'gid': os.getgid(), 'euid': os.geteuid(), 'pid': os.getpid(),
    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
    'cap_eff': status('CapEff'), 'cap_bnd': status('CapBnd'),
    'no_new_privs': status('NoNewPrivs'),
    'root': sorted(os.listdir('/')), 'dev': sorted(os.listdir('/dev')),
    'tmp': os.listdir('/tmp'), 'shm': os.listdir('/dev/shm'), 'cwd': os.getcwd(),
    'hostname': socket.gethostname(),
    'ifaces': sorted(n for _, n in socket.if_nameindex()),
    'fds': sorted(os.listdir('/proc/self/fd')),
}))
"""


@pytest.fixture(scope="module")
def probe(client: SyncClient) -> dict[str, object]:
    result = client.run(code=PROBE)
    assert result.status == "ok", result
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_unprivileged_user_in_its_own_namespaces(probe: dict[str, object]) -> None:
    assert (probe["uid"], probe["gid"], probe["euid"]) == (1000, 1000, 1000)
    assert probe["pid"] == 2  # the child of the jail's init (tests/jail/test_signals.py)
    assert probe["pids"] == [1, 2]
    assert probe["cap_eff"] == "0000000000000000"
    assert probe["cap_bnd"] == "0000000000000000"
    assert probe["no_new_privs"] == "1"
    assert probe["hostname"] == "sandbox"


def test_filesystem_is_minimal(probe: dict[str, object]) -> None:
    assert probe["root"] == [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib64",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    ]
    assert probe["dev"] == [
        "fd",
        "full",
        "null",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "urandom",
        "zero",
    ]
    assert probe["tmp"] == [] and probe["shm"] == []
    assert probe["cwd"] == "/workspace"


def test_only_stdio_fds(probe: dict[str, object]) -> None:
    assert probe["fds"] == ["0", "1", "2", "3"]  # 3 is listdir's own


def test_network_is_loopback_only(probe: dict[str, object]) -> None:
    assert probe["ifaces"] == ["lo"]


@pytest.mark.parametrize(
    "path",
    [
        "/root",
        "/home",
        "/var",
        "/run",
        "/srv",
        "/opt",
        "/etc/shadow",
        "/etc/hostname",
        "/sys",
        "/boot",
        "/proc/1/root/etc/shadow",
    ],
)
def test_host_paths_are_absent(client: SyncClient, path: str) -> None:
    result = client.run(code=f"import os; print(os.path.exists({path!r}))")
    assert result.stdout == "False\n", (path, result)


def test_daemon_state_is_invisible(client: SyncClient, daemon: Daemon) -> None:
    result = client.run(code=f"import os; print(os.path.exists({str(daemon.state_dir)!r}))")
    assert result.stdout == "False\n"


def test_system_dirs_are_read_only(client: SyncClient) -> None:
    code = (
        "for p in ['/usr/x', '/etc/x', '/x', '/bin/x', '/proc/sys/kernel/hostname']:\n"
        "    try:\n        open(p, 'w').write('x'); print(p, 'WRITABLE')\n"
        "    except OSError as e:\n        print(p, e.errno)\n"
    )
    result = client.run(code=code)
    assert "WRITABLE" not in result.stdout
    assert len(result.stdout.splitlines()) == 5


def test_runs_do_not_see_each_others_files(client: SyncClient) -> None:
    first = client.run(language="bash", code="echo secret > mine.txt; echo hi > /tmp/t")
    assert first.status == "ok"
    second = client.run(language="bash", code="ls -A /workspace /tmp")
    assert second.stdout == "/tmp:\n\n/workspace:\nmain.sh\n"


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on the host's loopback; nobody may connect to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    with counting(server) as hits:
        yield server.getsockname()[1]
    assert hits == []


def test_host_loopback_services_unreachable(
    client: SyncClient, daemon: Daemon, host_listener: int
) -> None:
    code = (
        "import socket\n"
        f"for port in ({daemon.port}, {host_listener}):\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect(('127.0.0.1', port)); print('CONNECTED')\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
    )
    result = client.run(code=code)
    assert result.stdout.count("refused") == 2, result


def test_no_dns_and_no_route_out(client: SyncClient) -> None:
    code = (
        "import socket\n"
        "try:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
        "except OSError as e:\n    print('no dns')\n"
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "print('routes', len(routes))\n"
    )
    # Only loopback is ever targeted by tests: the jail's routing table shows there is no way out.
    result = client.run(code=code)
    assert result.stdout.splitlines() == ["no dns", "routes 0"]


def test_loopback_inside_the_jail_works(client: SyncClient) -> None:
    code = (
        "import socket, threading\n"
        "srv = socket.create_server(('127.0.0.1', 0)); port = srv.getsockname()[1]\n"
        "threading.Thread(target=lambda: srv.accept()[0].sendall(b'pong'), daemon=True).start()\n"
        "c = socket.create_connection(('127.0.0.1', port)); print(c.recv(4).decode())\n"
    )
    assert client.run(code=code).stdout == "pong\n"
