"""Persistent sandboxes: files persist across runs and restarts, processes and /tmp do not;
quotas, expiry, and a file API that refuses traversal and never follows links."""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import InvalidRequest, NotFound, PayloadTooLarge
from sandboxd.testing import sandbox_processes
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def sandbox(client: SyncClient) -> Iterator[str]:
    sandbox_id = client.create_sandbox(language="python", limits={"disk_mib": 16}).id
    yield sandbox_id
    with contextlib.suppress(NotFound):
        client.delete_sandbox(sandbox_id)


def test_lifecycle_and_persistence(client: SyncClient, daemon: Daemon) -> None:
    sb = client.create_sandbox(language="bash", ttl_s=600, limits={"disk_mib": 16})
    assert sb.id.startswith("sbx_") and sb.state == "active" and sb.limits.disk_mib == 16
    assert sb.id in [s.id for s in client.list_sandboxes()]
    first = client.run_in_sandbox(
        sb.id, code="echo one > notes.txt; echo tmp > /tmp/t; ( setsid sleep 300 & ); echo started"
    )
    assert first.status == "ok" and first.sandbox_id == sb.id
    assert sandbox_processes() == []  # processes never outlive their run
    second = client.run_in_sandbox(sb.id, code="cat notes.txt; ls -A /tmp; echo two >> notes.txt")
    assert second.stdout == "one\n"  # bash is the sandbox's language; /tmp is fresh
    assert client.get_file(sb.id, "notes.txt") == b"one\ntwo\n"
    disk = daemon.state_dir / "sandboxes" / sb.id
    assert (disk / "disk.img").exists() and (disk / "mnt").is_mount()
    client.delete_sandbox(sb.id)
    with pytest.raises(NotFound):
        client.get_sandbox(sb.id)
    with pytest.raises(NotFound):
        client.run_in_sandbox(sb.id, code="echo")
    assert not disk.exists()


def test_file_api_round_trip(client: SyncClient, sandbox: str) -> None:
    blob = bytes(range(256)) * 100
    info = client.put_file(sandbox, "deep/dir/blob.bin", blob)
    assert (info.path, info.size) == ("deep/dir/blob.bin", len(blob))
    assert client.get_file(sandbox, "deep/dir/blob.bin") == blob
    result = client.run_in_sandbox(
        sandbox, code="import hashlib; print(len(open('deep/dir/blob.bin','rb').read()))"
    )
    assert result.stdout == f"{len(blob)}\n"
    client.put_file(sandbox, "main.py", b"print('kept main')\n")
    assert client.run_in_sandbox(sandbox).stdout == "kept main\n"  # no code: keeps main.py
    client.delete_file(sandbox, "deep")
    with pytest.raises(NotFound):
        client.get_file(sandbox, "deep/dir/blob.bin")
    with pytest.raises(NotFound):
        client.delete_file(sandbox, "never-was")


def test_archive(client: SyncClient, sandbox: str) -> None:
    client.run_in_sandbox(
        sandbox,
        language="bash",
        code="mkdir -p src; echo 'x = 1' > src/a.py; ln -s /etc/passwd src/link",
    )
    with tarfile.open(fileobj=io.BytesIO(client.archive(sandbox))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["src/a.py"].isfile()
        assert tar.extractfile("src/a.py").read() == b"x = 1\n"  # type: ignore[union-attr]
        assert members["src/link"].issym() and members["src/link"].linkname == "/etc/passwd"
        assert members["src"].isdir()


def test_workspace_quota(client: SyncClient) -> None:
    sb = client.create_sandbox(limits={"disk_mib": 8})
    try:
        result = client.run_in_sandbox(
            sb.id,
            language="bash",
            code="head -c 20000000 /dev/zero > big 2>/dev/null; echo $?; ls -l big | cut -d' ' -f5",
        )
        code, size = result.stdout.split()
        assert code != "0" and int(size) < 8 * 1024 * 1024
        with pytest.raises(PayloadTooLarge):
            client.put_file(sb.id, "huge", b"x" * (12 * 1024 * 1024))
    finally:
        client.delete_sandbox(sb.id)


def test_run_limits_default_to_the_sandboxes(client: SyncClient) -> None:
    sb = client.create_sandbox(limits={"wall_time_s": 1, "disk_mib": 8})
    try:
        slow = client.run_in_sandbox(sb.id, code="import time; time.sleep(5)")
        assert slow.status == "timeout" and slow.limits.wall_time_s == 1
        longer = client.run_in_sandbox(sb.id, code="print('ok')", limits={"wall_time_s": 5})
        assert longer.limits.wall_time_s == 5
    finally:
        client.delete_sandbox(sb.id)


def test_bad_sandbox_requests(client: SyncClient) -> None:
    with pytest.raises(InvalidRequest) as err:
        client.create_sandbox(image="python:3.12")
    assert err.value.field == "image"
    with pytest.raises(InvalidRequest) as err:
        client.create_sandbox(ttl_s=10**9)
    assert err.value.field == "ttl_s"
    with pytest.raises(InvalidRequest) as err:
        client.create_sandbox(network={"mode": "everything"})
    assert err.value.field == "network.mode"


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "a/%2e%2e/%2e%2e/x",
        "%2Fetc%2Fpasswd",
        "a/..%2F..%2Fb",
    ],
)
def test_file_api_refuses_traversal(daemon: Daemon, sandbox: str, path: str) -> None:
    for method, data in (("PUT", b"pwned"), ("GET", None), ("DELETE", None)):
        req = daemon.request(f"/v1/sandboxes/{sandbox}/files/{path}", data=data, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code in (400, 404), (method, path)
    assert Path("/etc/passwd").read_bytes() != b"pwned"


def test_file_api_never_follows_links(client: SyncClient, sandbox: str, workdir: Path) -> None:
    target = workdir / "host-target.txt"
    target.write_text("host secret\n")
    client.run_in_sandbox(
        sandbox,
        language="bash",
        code=f"ln -s /etc/passwd leak.txt; ln -s / rootlink; ln -s {workdir} hostdir; mkfifo pipe",
    )
    with pytest.raises(InvalidRequest):
        client.get_file(sandbox, "leak.txt")
    with pytest.raises(InvalidRequest):
        client.get_file(sandbox, "pipe")
    with pytest.raises(NotFound):
        client.get_file(sandbox, "rootlink/etc/passwd")
    with pytest.raises(InvalidRequest):
        client.put_file(sandbox, "leak.txt", b"pwned")
    with pytest.raises(InvalidRequest):
        client.put_file(sandbox, "hostdir/host-target.txt", b"pwned")
    client.delete_file(sandbox, "hostdir")  # removes the link, never what it points at
    assert target.read_text() == "host secret\n"
    assert Path("/etc/passwd").read_bytes().startswith(b"root:")


def test_idle_sandboxes_expire(workdir: Path) -> None:
    d = Daemon(workdir, "ttl", sandbox_sweep_s=0.2).start()
    try:
        with d.client() as client:
            keep = client.create_sandbox(ttl_s=600, limits={"disk_mib": 4})
            gone = client.create_sandbox(ttl_s=1, limits={"disk_mib": 4})
            client.put_file(gone.id, "f", b"x")
            for _ in range(100):  # bounded: ~10 s (its row goes first, then its disk)
                listed = [s.id for s in client.list_sandboxes()]
                if gone.id not in listed and not (d.state_dir / "sandboxes" / gone.id).exists():
                    break
                time.sleep(0.1)
            with pytest.raises(NotFound):
                client.get_sandbox(gone.id)
            assert client.get_sandbox(keep.id).state == "active"
            assert not (d.state_dir / "sandboxes" / gone.id).exists()
            actions = [(r.action, r.target) for r in client.audit(limit=1000).records]
            assert ("sandbox.expire", gone.id) in actions
    finally:
        assert d.stop() == 0


def test_a_stopped_daemon_unmounts_sandbox_disks_and_the_next_remounts(workdir: Path) -> None:
    d = Daemon(workdir, "remount").start()
    with d.client() as c:
        box = c.create_sandbox(language="python").id
        c.put_file(box, "kept.txt", b"still here")
    assert d.stop() == 0
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if box in ln]
    assert mounts == [], "a stopped daemon leaves no sandbox disk mounted"
    d2 = Daemon(workdir, "remount").start()
    try:
        with d2.client() as c:
            assert c.get_file(box, "kept.txt") == b"still here"
            c.delete_sandbox(box)
    finally:
        assert d2.stop() == 0


def _names(client: SyncClient, sandbox: str) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(client.archive(sandbox))) as tar:
        return {m.name for m in tar.getmembers()}


def test_a_refused_put_leaves_nothing_partial(client: SyncClient) -> None:
    sb = client.create_sandbox(limits={"disk_mib": 8})
    try:
        client.put_file(sb.id, "kept.bin", b"old content")
        for name in ("kept.bin", "new.bin"):
            with pytest.raises(PayloadTooLarge):
                client.put_file(sb.id, name, b"x" * (7 * 1024 * 1024))
        assert client.get_file(sb.id, "kept.bin") == b"old content"
        with pytest.raises(NotFound):
            client.get_file(sb.id, "new.bin")
        assert _names(client, sb.id) == {"kept.bin"}  # no temporary file either
        client.put_file(sb.id, "kept.bin", b"y" * (3 * 1024 * 1024))  # what fits still does
        assert client.get_file(sb.id, "kept.bin") == b"y" * (3 * 1024 * 1024)
    finally:
        client.delete_sandbox(sb.id)


def test_code_never_overwrites_a_workspace_main_file(client: SyncClient, sandbox: str) -> None:
    for _ in range(2):  # the main file of `code` is the run's: it is not left behind
        assert client.run_in_sandbox(sandbox, code="print('one')").stdout == "one\n"
        assert client.run_in_sandbox(sandbox, language="bash", code="ls").stdout == "main.sh\n"
    assert _names(client, sandbox) == set()
    client.put_file(sandbox, "main.py", b"print('mine')\n")
    with pytest.raises(InvalidRequest) as err:
        client.run_in_sandbox(sandbox, code="print('theirs')")
    assert err.value.field == "code"
    assert client.get_file(sandbox, "main.py") == b"print('mine')\n"
    assert client.run_in_sandbox(sandbox).stdout == "mine\n"
    # A run that rewrites its own main file leaves it, as the workspace's file.
    client.delete_file(sandbox, "main.py")
    client.run_in_sandbox(sandbox, code="open('main.py', 'w').write('print(2)')")
    assert client.get_file(sandbox, "main.py") == b"print(2)"


def test_a_sandbox_run_cannot_choose_other_isolation(client: SyncClient, sandbox: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        client.run_in_sandbox(sandbox, code="print(1)", backend="docker")
    assert err.value.field == "backend"
    with pytest.raises(InvalidRequest) as err:
        client.run_in_sandbox(sandbox, code="print(1)", image="python:3.12")
    assert err.value.field == "image"
    assert client.run_in_sandbox(sandbox, code="print(1)", backend="nsjail").stdout == "1\n"


def test_concurrent_deletes_succeed_once(daemon: Daemon, client: SyncClient) -> None:
    """16 DELETEs of one sandbox at once: one 204, fifteen 404 (a few rounds: it is a race)."""

    def delete(box: str, together: threading.Barrier) -> int:
        req = daemon.request(f"/v1/sandboxes/{box}", method="DELETE")
        together.wait(timeout=30)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code

    for _ in range(5):
        box = client.create_sandbox(limits={"disk_mib": 4}).id
        together = threading.Barrier(16)
        with ThreadPoolExecutor(16) as pool:
            statuses = sorted(pool.map(delete, [box] * 16, [together] * 16))
        assert statuses == [204] + [404] * 15
