"""Nothing under a daemon's state directory is readable by another local user.

The database and its WAL hold run output and request digests, the disk images every file of
every sandbox, `admin.token` a secret. After a daemon has served runs (plain and streamed), a
sandbox with files, an archive and tokens, every file and directory under its state dir is
tried as `nobody`: no file may be opened for reading and no directory listed. Directories that
nsjail traverses are 0711, which lets `nobody` walk through but never list them.

What is checked, and what is not:
- Every regular file and directory, wherever it is, including runs' and sandboxes' work trees
  (files there belong to the run's own uid, below 0700 directories: `nobody` cannot reach
  them, and the test proves it too).
- Except the four files of `etc/`: the jails' `/etc/passwd`, `group`, `hosts` and
  `nsswitch.conf`, bind-mounted read-only into every jail, whose unprivileged uid must read
  them. Their content is fixed and public (the same for every daemon); `etc/` itself is not
  listable.
- Root-owned files are also checked for mode: nothing for others, and group bits only with
  group root (nsjail makes its log 0640 root:root).
"""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from pathlib import Path

from sandboxd.client import SyncClient
from tests.conftest import DOCKER_PROBLEM
from tests.daemon import Daemon

NOBODY = 65534
JAIL_ETC = {"etc/passwd", "etc/group", "etc/hosts", "etc/nsswitch.conf"}
EXPECTED = {"sandboxd.db", "sandboxd.db-wal", "sandboxd.db-shm", "admin.token", "audit.head"}


def _entries(state_dir: Path) -> dict[str, os.stat_result]:
    """Every regular file and directory under `state_dir` (links not followed), by path.
    Warm pools come and go while this walks: what vanishes meanwhile is left out."""
    found = {".": state_dir.lstat()}
    for dirpath, dirs, files in os.walk(state_dir):
        for name in dirs + files:
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except FileNotFoundError:  # a warm jail's run dir, renamed or gone meanwhile
                continue
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                found[str(path.relative_to(state_dir))] = st
    return found


def _open_as_nobody(state_dir: Path, entries: dict[str, os.stat_result]) -> list[str]:
    """The entries `nobody` can read (files) or list (directories), tried in a forked child."""
    targets = [(str(state_dir / rel), stat.S_ISDIR(st.st_mode)) for rel, st in entries.items()]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            opened = []
            for path, is_dir in targets:
                try:
                    if is_dir:
                        os.listdir(path)
                    else:
                        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
                    opened.append(path)
                except OSError:
                    pass
            with os.fdopen(write_end, "w") as out:
                json.dump(opened, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child could not become nobody"
    return [os.path.relpath(p, state_dir) for p in json.loads(raw)]


def _owner_only_violations(entries: dict[str, os.stat_result]) -> list[str]:
    bad = []
    for rel, st in entries.items():
        if st.st_uid != 0 or rel in JAIL_ETC:
            continue
        allowed = 0o711 if stat.S_ISDIR(st.st_mode) else 0o700
        if st.st_gid == 0:
            allowed |= 0o050 if stat.S_ISDIR(st.st_mode) else 0o040
        if stat.S_IMODE(st.st_mode) & ~allowed:
            bad.append(f"{rel} {stat.S_IMODE(st.st_mode):o}")
    return bad


def _serve_some(d: Daemon) -> str:
    """Runs, a streamed run, a sandbox with files and an archive, a token; the sandbox id."""
    d.make_token("perm-tenant", "run", "sandboxes")
    with d.client() as client:
        assert client.run(code="print('secret output')").stdout == "secret output\n"
        client.run(language="bash", code="echo to stderr >&2; exit 3", stdin="secret stdin")
        # The daemon's umask is its own: a jail's program sees a host's usual one.
        assert client.run(language="bash", code="umask").stdout == "0022\n"
        assert client.run(language="bash", code="umask", limits={"pids": 32}).stdout == "0022\n"
        if DOCKER_PROBLEM is None:  # its stdin is a file the container's uid alone reads
            cold = client.run(
                backend="docker", code="print(input())", stdin="in", limits={"memory_mib": 200}
            )
            assert cold.stdout == "in\n", cold
        box = client.create_sandbox(limits={"disk_mib": 8}).id
        client.put_file(box, "notes/secret.txt", b"sandbox secret\n")
        client.run_in_sandbox(box, language="bash", code="echo made-in-run > made.txt")
        assert len(client.archive(box)) > 0
        _stream(d)
    return box


def _stream(d: Daemon) -> None:
    body = json.dumps({"language": "bash", "code": "echo streamed"}).encode()
    req = d.request("/v1/runs", data=body, method="POST")
    req.add_header("Accept", "text/event-stream")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert b"streamed" in resp.read()


def _check(d: Daemon, box: str | None) -> None:
    entries = _entries(d.state_dir)
    names = set(entries)
    must = EXPECTED | ({f"sandboxes/{box}/disk.img"} if box else set())
    if box is None:  # a stopped daemon checkpoints and removes the WAL
        must -= {"sandboxd.db-wal", "sandboxd.db-shm"}
    assert must <= names, f"missing: {must - names}"
    assert any(n.startswith("seccomp/") for n in names), names
    readable = sorted(set(_open_as_nobody(d.state_dir, entries)) - JAIL_ETC)
    assert readable == [], f"nobody can read or list: {readable}"
    assert _owner_only_violations(entries) == []


def test_state_is_owner_only(workdir: Path) -> None:
    d = Daemon(workdir, "perms", docker={"enabled": DOCKER_PROBLEM is None}).start()
    try:
        box = _serve_some(d)
        _check(d, box)
        with SyncClient(d.url, token=d.token) as client:
            client.delete_sandbox(box)
    finally:
        assert d.stop() == 0
    _check(d, None)
