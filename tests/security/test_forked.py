"""What a jail forked by the fork server shares with other runs and with the server: nothing
that can be written or observed (THREAT_MODEL.md, "Forked jails").

Every other test of this suite also runs on forked jails (see conftest.py); these are the
claims only a fork server raises: two concurrent forked runs, and the server itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandboxd.client import SyncClient
from sandboxd.testing import FORK_SERVER_PREFIX, leftover_cgroups, sandbox_processes
from tests.conftest import assert_no_leftovers
from tests.daemon import Daemon

NAMESPACES = ("user", "pid", "net", "mnt", "ipc", "uts", "cgroup")
PORT = 41731
ABSTRACT = "\\0sandboxd-forked-test"

HOLDER = f"""
import json, os, socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", {PORT})); srv.listen()
ab = socket.socket(socket.AF_UNIX); ab.bind("{ABSTRACT}"); ab.listen()
open("/tmp/holder", "w").write("a"); open("/dev/shm/holder", "w").write("a")
print(json.dumps({{n: os.stat(f"/proc/self/ns/{{n}}").st_ino for n in {NAMESPACES!r}}}))
time.sleep(3)
"""

PROBER = f"""
import ctypes, errno, json, os, signal, socket
def connect(family, address):
    s = socket.socket(family)
    try:
        s.connect(address)
        return "connected"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def signalable(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
libc = ctypes.CDLL(None, use_errno=True)
ptrace = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH the jail's init
ptrace_errno = errno.errorcode[ctypes.get_errno()]
try:
    os.kill(1, signal.SIGKILL)
    init_kill = "sent"
except OSError as exc:
    init_kill = errno.errorcode[exc.errno]
print(json.dumps({{
    "ns": {{n: os.stat(f"/proc/self/ns/{{n}}").st_ino for n in {NAMESPACES!r}}},
    "tcp": connect(socket.AF_INET, ("127.0.0.1", {PORT})),
    "abstract": connect(socket.AF_UNIX, "{ABSTRACT}"),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "signalable": [pid for pid in range(1, 1 << 16) if signalable(pid)],
    "tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm"),
    "init": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode(),
    "init_status": {{k: v.strip() for k, _, v in (
        ln.partition(":") for ln in open("/proc/1/status")
    ) if k in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "Uid")}},
    "ptrace": [ptrace, ptrace_errno],
    "init_kill": init_kill,
}}))
"""


@pytest.fixture
def client(forked_daemon: Daemon) -> Iterator[SyncClient]:
    with forked_daemon.client() as c:
        yield c
    assert_no_leftovers(forked_daemon)


def server_processes(daemon: Daemon) -> list[psutil.Process]:
    """The fork servers: in their cgroups, the children of nsjail (which runs as root; the
    servers' own children wait there for runs, and leave as runs take them)."""
    found: dict[int, psutil.Process] = {}
    for group in leftover_cgroups(daemon.cgroup_parent, include_fork_servers=True):
        if group.name.startswith(FORK_SERVER_PREFIX) and (group / "cgroup.procs").exists():
            for pid in map(int, (group / "cgroup.procs").read_text().split()):
                try:
                    proc = psutil.Process(pid)
                    if proc.uids().real != 0 and psutil.Process(proc.ppid()).uids().real == 0:
                        found[pid] = proc  # (cgroup v1: once per controller)
                except psutil.NoSuchProcess:
                    continue
    return list(found.values())


def namespaces_of(pid: int | str) -> dict[str, int]:
    return {n: os.stat(f"/proc/{pid}/ns/{n}").st_ino for n in NAMESPACES}


def test_two_forked_runs_share_nothing_with_each_other_or_the_server(
    client: SyncClient, forked_daemon: Daemon
) -> None:
    servers = server_processes(forked_daemon)
    assert len(servers) == 2  # one for most runs, one for cache and allowlist runs
    held: dict[str, object] = {}

    def hold() -> None:
        with forked_daemon.client() as own:  # a client per thread
            held["r"] = own.run(code=HOLDER)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(1.0)
    uids = {p.uids().real for p in sandbox_processes(uid_bases={forked_daemon.uid_base})}
    probe = client.run(code=PROBER)
    holder.join(timeout=30)
    first = held["r"]
    assert first.status == "ok", first  # type: ignore[attr-defined]
    assert probe.status == "ok", probe
    a = json.loads(first.stdout)  # type: ignore[attr-defined]
    b = json.loads(probe.stdout)
    for name in NAMESPACES:
        others = {a[name], namespaces_of(os.getpid())[name]}
        others |= {namespaces_of(p.pid)[name] for p in servers}
        assert b["ns"][name] not in others, name
        assert a[name] not in {namespaces_of(p.pid)[name] for p in servers}, name
    assert b["tcp"] == "ECONNREFUSED" and b["abstract"] == "ECONNREFUSED"
    # Its init is pid 1 but not its uid: the run can signal nothing but itself.
    assert b["pids"] == [1, 2] and b["signalable"] == [2] and b["init_kill"] == "EPERM"
    assert b["tmp"] == [] and b["shm"] == []
    assert b["init"] == "/usr/bin/python3"  # the forked init, filtered as the run is
    # The init is the run's own process and can do no more than the run: were the run to
    # take it over (same uid), it would gain nothing.
    zero = "0000000000000000"
    assert b["init_status"] == {
        "Uid": "65534\t65534\t65534\t65534",  # the server's unprivileged uid, not mapped here
        "CapPrm": zero,
        "CapEff": zero,
        "CapBnd": zero,
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }
    assert b["ptrace"] == [-1, "EPERM"]
    # The holder (alone at that moment) ran as a host uid of its own; only its init, which
    # it cannot signal, has the server's.
    server_uids = {p.uids().real for p in servers}
    assert len(uids - server_uids) == 1
    assert all(p.is_running() for p in servers)


KILLER = """
import os, signal
for pid in range(1, 1 << 16):
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
try:
    os.kill(-1, signal.SIGKILL)  # everything this run may signal, but itself and its init
except ProcessLookupError:
    pass  # nothing: the server is not among them
print("still here")
"""


def test_a_run_cannot_signal_or_trace_its_fork_server(
    client: SyncClient, forked_daemon: Daemon
) -> None:
    before = {(p.pid, p.create_time()) for p in server_processes(forked_daemon)}
    result = client.run(code=KILLER)
    assert result.status == "ok" and result.stdout == "still here\n", result
    after = {(p.pid, p.create_time()) for p in server_processes(forked_daemon)}
    assert before == after
    assert client.run(code="print(1)").stdout == "1\n"


def test_placeholders_a_forked_run_does_not_use_are_read_only(client: SyncClient) -> None:
    code = """
import errno
for path in ("/cache/x", "/run/sandboxd/x", "/x"):
    try:
        open(path, "w")
        print(path, "written")
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
"""
    allow = {"mode": "allowlist", "allow": ["example.com:443"]}  # the other server's jail
    result = client.run(code=code, network=allow)
    assert result.status == "ok", result
    assert result.stdout.split("\n")[:3] == [
        "/cache/x EROFS",
        "/run/sandboxd/x EROFS",
        "/x EROFS",
    ]


def test_a_dead_fork_server_is_replaced_and_no_run_fails(
    client: SyncClient, forked_daemon: Daemon
) -> None:
    servers = [
        p
        for p in server_processes(forked_daemon)
        if p.ppid() not in {q.pid for q in server_processes(forked_daemon)}
    ]
    for proc in servers:
        proc.kill()
    for _ in range(3):  # meanwhile nsjail builds the jails
        result = client.run(code="print('fine')")
        assert result.status == "ok" and result.stdout == "fine\n", result
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fresh = server_processes(forked_daemon)
        if len(fresh) == 2 and not {p.pid for p in fresh} & {p.pid for p in servers}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the fork servers were not started again")
    assert client.run(code="print('forked')").stdout == "forked\n"
    log = Path(forked_daemon.log).read_text()
    assert "a fork server ended; starting another" in log
