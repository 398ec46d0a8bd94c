"""Snapshots of persistent sandboxes and sandboxes started from them (forks): a fork sees the
snapshot's workspace copy-on-write, writes it as a uid of its own, and changes neither the
snapshot nor the source; tenant scoping, the snapshot-disk quota, refusals that leave nothing
behind, the audit trail, and a daemon restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import BackendUnavailable, NotFound, QuotaExceeded
from tests.conftest import BackendClient
from tests.daemon import Daemon

pytestmark = pytest.mark.usefixtures("no_leftovers")
SMALL = {"disk_mib": 16}
SETUP = (
    "mkdir -p env/lib && echo 'from source' > env/a.txt && "
    "for i in $(seq 1 50); do echo $i > env/lib/f$i.py; done && chmod 755 env/lib"
)


def call(
    daemon: Daemon, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One API call; its status and decoded JSON body (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    req = daemon.request(path, data=data, method=method, token=token)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def snapshot(daemon: Daemon, sandbox_id: str, token: str | None = None, **body: Any) -> Any:
    status, snap = call(daemon, "POST", f"/v1/sandboxes/{sandbox_id}/snapshots", body, token)
    assert status == 201, snap
    return snap


def delete(daemon: Daemon, path: str, token: str | None = None) -> int:
    status, _ = call(daemon, "DELETE", path, token=token)
    return status


def mounted(state_dir: Path, needle: str) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [ln for ln in lines if f" {state_dir}/" in ln and needle in ln]


def test_a_fork_writes_its_own_copy(backend_client: BackendClient, daemon: Daemon) -> None:
    c = backend_client
    source = c.create_sandbox(language="bash", limits={"disk_mib": 32}).id
    assert c.run_in_sandbox(source, code=SETUP).status == "ok"
    snap = snapshot(daemon, source, labels={"env": "test", "k.v/x": "1"})
    assert snap["id"].startswith("snap_") and snap["sandbox_id"] == source
    assert snap["tenant"] == "default" and snap["labels"] == {"env": "test", "k.v/x": "1"}
    assert snap["size_bytes"] > 0
    image = daemon.state_dir / "snapshots" / snap["id"] / "disk.img"
    assert image.stat().st_mode & 0o777 == 0o400
    fork = c.create_sandbox(language="bash", from_snapshot=snap["id"], limits={"disk_mib": 16})
    other = c.create_sandbox(language="bash", from_snapshot=snap["id"], limits={"disk_mib": 16})
    try:
        assert mounted(daemon.state_dir, f"snapshots/{snap['id']}/mnt")  # shared, read-only
        out = c.run_in_sandbox(
            fork.id,
            code="cat env/a.txt; echo forked >> env/a.txt; echo new > env/lib/new.py; "
            "rm env/lib/f1.py; cat env/a.txt; id -u",
        )
        assert out.status == "ok", out.stderr
        lines = out.stdout.split("\n")
        assert lines[:3] == ["from source", "from source", "forked"]
        assert c.get_file(fork.id, "env/lib/new.py") == b"new\n"
        # The fork's files belong to its own host uid, not the source's.
        fork_work = daemon.state_dir / "sandboxes" / fork.id / "mnt" / "work"
        src_work = daemon.state_dir / "sandboxes" / source / "mnt" / "work"
        assert (fork_work / "env/a.txt").stat().st_uid != (src_work / "env/a.txt").stat().st_uid
        assert (fork_work / "env/lib/f2.py").stat().st_uid == (fork_work / "env").stat().st_uid
        # Neither the source nor the snapshot (seen by another fork) changed.
        assert c.get_file(source, "env/a.txt") == b"from source\n"
        assert c.get_file(other.id, "env/a.txt") == b"from source\n"
        assert c.get_file(other.id, "env/lib/f1.py") == b"1\n"
        with pytest.raises(NotFound):
            c.get_file(other.id, "env/lib/new.py")
        # In use: refused, naming the forks; the source may go (the snapshot is a copy).
        status, err = call(daemon, "DELETE", f"/v1/snapshots/{snap['id']}")
        assert status == 409 and err["error"]["code"] == "conflict"
        assert fork.id in err["error"]["message"] and err["error"]["field"] == "snapshot_id"
        c.delete_sandbox(source)
        assert c.run_in_sandbox(other.id, code="cat env/lib/f3.py").stdout == "3\n"
    finally:
        for box in (fork.id, other.id, source):
            with contextlib.suppress(NotFound):
                c.delete_sandbox(box)
    assert mounted(daemon.state_dir, snap["id"]) == []  # the last fork took the mount along
    assert delete(daemon, f"/v1/snapshots/{snap['id']}") == 204
    assert not image.parent.exists()
    assert call(daemon, "GET", f"/v1/snapshots/{snap['id']}")[0] == 404


def test_refusals(client: SyncClient, daemon: Daemon) -> None:
    # the session's daemon is shared: other tiers (coder's kept environments) own snapshots too
    others = {s["id"] for s in call(daemon, "GET", "/v1/snapshots")[1]["snapshots"]}
    box = client.create_sandbox(limits={"disk_mib": 8}).id
    alice = daemon.make_token("snap-alice", "sandboxes")
    try:
        snap = snapshot(daemon, box)
        sid = snap["id"]
        before = sorted(p.name for p in (daemon.state_dir / "sandboxes").iterdir())
        bad = [
            ("POST", "/v1/sandboxes", {"from_snapshot": "../etc"}, 400, "from_snapshot"),
            ("POST", "/v1/sandboxes", {"from_snapshot": "snap_" + "0" * 16}, 404, "from_snapshot"),
            ("POST", f"/v1/sandboxes/{box}/snapshots", {"labels": {"bad key": "v"}}, 400, "labels"),
            ("POST", f"/v1/sandboxes/{box}/snapshots", {"labels": {"k": "v" * 300}}, 400, None),
            ("POST", f"/v1/sandboxes/{box}/snapshots", {"other": 1}, 400, "other"),
            ("POST", "/v1/sandboxes/sbx_nope/snapshots", {}, 404, None),
            ("GET", "/v1/snapshots/snap_nope", None, 404, None),
            ("DELETE", "/v1/snapshots/../x", None, 404, None),
        ]
        for method, path, body, status, field in bad:
            got, err = call(daemon, method, path, body)
            assert got == status, (path, err)
            if field:
                assert err["error"]["field"] == field, err
        # Another tenant's snapshot does not exist for alice: not listed, not readable,
        # not deletable, not forkable; an admin lists every tenant's.
        assert call(daemon, "GET", "/v1/snapshots", token=alice) == (200, {"snapshots": []})
        assert call(daemon, "GET", f"/v1/snapshots/{sid}", token=alice)[0] == 404
        assert delete(daemon, f"/v1/snapshots/{sid}", token=alice) == 404
        status, err = call(daemon, "POST", "/v1/sandboxes", {"from_snapshot": sid}, alice)
        assert status == 404 and err["error"]["field"] == "from_snapshot"
        own = call(daemon, "POST", "/v1/sandboxes", {"limits": {"disk_mib": 4}}, alice)[1]["id"]
        mine = snapshot(daemon, own, token=alice)
        listed = {s["id"] for s in call(daemon, "GET", "/v1/snapshots")[1]["snapshots"]}
        assert {sid, mine["id"]} <= listed
        assert call(daemon, "GET", "/v1/snapshots", token=alice)[1]["snapshots"] == [mine]
        assert delete(daemon, f"/v1/sandboxes/{own}", token=alice) == 204
        assert delete(daemon, f"/v1/snapshots/{mine['id']}", token=alice) == 204
        # Refused requests left nothing behind.
        after = sorted(p.name for p in (daemon.state_dir / "sandboxes").iterdir())
        assert after == before
        assert {s["id"] for s in call(daemon, "GET", "/v1/snapshots")[1]["snapshots"]} == {
            sid,
            *others,
        }
        assert delete(daemon, f"/v1/snapshots/{sid}") == 204
    finally:
        client.delete_sandbox(box)


def test_quota_and_a_failed_fork_leave_nothing(workdir: Path) -> None:
    d = Daemon(
        workdir,
        "snapquota",
        tenants={"q": {"max_snapshot_disk_mib": 3, "max_sandboxes": 2, "max_disk_mib": 64}},
    ).start()
    try:
        token = d.make_token("q", "sandboxes")
        with d.client(token) as c:
            box = c.create_sandbox(limits={"disk_mib": 16}).id
            small = snapshot(d, box, token=token)["id"]  # an empty workspace fits in 3 MiB
            c.put_file(box, "big.bin", os.urandom(4 * 1024 * 1024))
            status, err = call(d, "POST", f"/v1/sandboxes/{box}/snapshots", {}, token)
            assert status == 429 and err["error"]["code"] == "quota_exceeded"
            assert err["error"]["field"] == "max_snapshot_disk_mib"
            assert [p.name for p in (d.state_dir / "snapshots").iterdir()] == [small]
            assert [
                s["id"] for s in call(d, "GET", "/v1/snapshots", token=token)[1]["snapshots"]
            ] == [small]
            with pytest.raises(QuotaExceeded) as quota:  # a fork over the tenant's disk quota
                c.create_sandbox(from_snapshot=small, limits={"disk_mib": 60})
            assert quota.value.field == "max_disk_mib"
        with d.client() as admin:
            src = admin.create_sandbox(limits={"disk_mib": 8}).id
            sid = snapshot(d, src)["id"]
            admin.delete_sandbox(src)
            boxes = sorted((d.state_dir / "sandboxes").iterdir())
            listed = admin.list_sandboxes()
            # A failure after the fork was reserved (its snapshot's image cannot be mounted)
            # is undone: no image, no mount, no row.
            image = d.state_dir / "snapshots" / sid / "disk.img"
            image.rename(image.with_name("moved"))
            try:
                with pytest.raises(BackendUnavailable):
                    admin.create_sandbox(from_snapshot=sid, limits={"disk_mib": 8})
            finally:
                image.with_name("moved").rename(image)
            assert sorted((d.state_dir / "sandboxes").iterdir()) == boxes
            assert admin.list_sandboxes() == listed
            assert mounted(d.state_dir, "sandboxes/") == mounted(d.state_dir, box)
            assert mounted(d.state_dir, "snapshots/") == []
            fork = admin.create_sandbox(from_snapshot=sid, limits={"disk_mib": 8}).id
            admin.delete_sandbox(fork)
            assert delete(d, f"/v1/snapshots/{sid}") == 204
    finally:
        assert d.stop() == 0


def test_forks_survive_a_restart_and_are_audited(workdir: Path) -> None:
    d = Daemon(workdir, "snaprestart").start()
    with d.client() as c:
        src = c.create_sandbox(language="bash").id
        c.run_in_sandbox(src, code=SETUP)
        sid = snapshot(d, src, labels={"step": "1"})["id"]
        fork = c.create_sandbox(language="bash", from_snapshot=sid).id
        c.put_file(fork, "upper.txt", b"the fork's")
        stacked = snapshot(d, fork)["id"]
        top = c.create_sandbox(language="bash", from_snapshot=stacked).id
    assert d.stop() == 0
    assert mounted(d.state_dir, "") == [], "a stopped daemon leaves nothing mounted"
    d2 = Daemon(workdir, "snaprestart").start()
    try:
        with d2.client() as c:
            assert c.get_file(fork, "upper.txt") == b"the fork's"
            assert c.run_in_sandbox(fork, code="cat env/a.txt").stdout == "from source\n"
            assert call(d2, "GET", f"/v1/snapshots/{sid}")[1]["labels"] == {"step": "1"}
            both = c.run_in_sandbox(top, code="cat upper.txt env/a.txt").stdout
            assert both == "the fork'sfrom source\n"
            for box in (top, fork, src):
                c.delete_sandbox(box)
            assert delete(d2, f"/v1/snapshots/{stacked}") == 204
            assert delete(d2, f"/v1/snapshots/{sid}") == 204
            records = c.audit(limit=1000).records
        created = [r for r in records if r.action == "snapshot.create"]
        made = [(r.target, r.result["sandbox_id"]) for r in created]
        assert made == [(sid, src), (stacked, fork)]
        forked = [r for r in records if r.action == "sandbox.create" and r.target == fork]
        assert forked[0].request["from_snapshot"] == sid
        deleted = [r for r in records if r.action == "snapshot.delete"]
        gone = [(r.target, r.result["http_status"]) for r in deleted]
        assert gone == [(stacked, 204), (sid, 204)]
    finally:
        assert d2.stop() == 0


def test_a_crash_mid_snapshot_is_undone_at_restart(workdir: Path) -> None:
    """After kill -9 with a sandbox's filesystem frozen (as a snapshot leaves it while it
    copies) and half a snapshot on disk, the next daemon thaws the one and drops the other;
    a fork that was running comes back with its snapshot."""
    d = Daemon(workdir, "snapcrash").start()
    with d.client() as c:
        box = c.create_sandbox(language="bash").id
        c.run_in_sandbox(box, code=SETUP)
        sid = snapshot(d, box)["id"]
        fork = c.create_sandbox(language="bash", from_snapshot=sid).id
        c.put_file(fork, "mine.txt", b"fork")
    d.stop(signal.SIGKILL)
    subprocess.run(["fsfreeze", "-f", str(d.state_dir / "sandboxes" / box / "mnt")], check=True)
    half = "snap_" + "f" * 16
    (d.state_dir / "snapshots" / half).mkdir()
    with contextlib.closing(sqlite3.connect(d.state_dir / "sandboxd.db")) as db, db:
        db.execute(
            "INSERT INTO snapshots (id, tenant, sandbox_id, uid, size_bytes, labels,"
            " created_at, state) VALUES (?, 'default', ?, 0, 1, '{}', 0, 'creating')",
            (half, box),
        )
    d2 = Daemon(workdir, "snapcrash").start()
    try:
        with d2.client() as c:
            c.put_file(box, "after.txt", b"thawed")  # would hang on a frozen filesystem
            assert c.get_file(box, "after.txt") == b"thawed"
            assert c.get_file(fork, "mine.txt") == b"fork"
            assert c.get_file(fork, "env/a.txt") == b"from source\n"
            listed = call(d2, "GET", "/v1/snapshots")[1]["snapshots"]
            assert [s["id"] for s in listed] == [sid]
            assert not (d2.state_dir / "snapshots" / half).exists()
            c.delete_sandbox(fork)
            c.delete_sandbox(box)
            assert delete(d2, f"/v1/snapshots/{sid}") == 204
    finally:
        assert d2.stop() == 0


def test_a_snapshot_waits_for_the_run_in_flight(client: SyncClient, daemon: Daemon) -> None:
    box = client.create_sandbox(language="bash", limits={"disk_mib": 8}).id
    try:

        def slow() -> str:
            with daemon.client() as own:  # a SyncClient per thread
                return own.run_in_sandbox(box, code="sleep 1; echo done > late.txt").status

        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(slow)
            for _ in range(200):  # bounded: until the run holds the sandbox
                if client.info().active_runs:
                    break
                time.sleep(0.01)
            sid = snapshot(daemon, box)["id"]
            assert run.result() == "ok"
        fork = client.create_sandbox(from_snapshot=sid, limits={"disk_mib": 4}).id
        assert client.get_file(fork, "late.txt") == b"done\n"
        client.delete_sandbox(fork)
        assert delete(daemon, f"/v1/snapshots/{sid}") == 204
    finally:
        client.delete_sandbox(box)


SNAPSHOT_ROUTES = [
    ("POST", "/v1/sandboxes/sbx_x/snapshots", {}),
    ("GET", "/v1/snapshots", None),
    ("GET", "/v1/snapshots/snap_x", None),
    ("DELETE", "/v1/snapshots/snap_x", None),
]


@pytest.mark.parametrize(("method", "path", "body"), SNAPSHOT_ROUTES)
def test_snapshot_routes_need_a_token_with_the_sandboxes_scope(
    daemon: Daemon, method: str, path: str, body: Any
) -> None:
    for token in ("", "garbage"):
        status, err = call(daemon, method, path, body, token)
        assert (status, err["error"]["code"]) == (401, "unauthorized")
    status, err = call(daemon, method, path, body, daemon.make_token("snap-runner", "run"))
    assert (status, err["error"]["code"]) == (403, "forbidden")


def test_a_snapshot_of_a_fork_stacks_on_its_snapshot(
    backend_client: BackendClient, daemon: Daemon
) -> None:
    """A snapshot of a fork holds what the fork wrote (changes, new files, deletions) above
    the snapshot the fork came from; a fork of it sees all of that, writes as its own uid, and
    the snapshot below cannot go while the one above it exists."""
    c = backend_client
    base = c.create_sandbox(language="bash", limits={"disk_mib": 16}).id
    c.run_in_sandbox(base, code=SETUP)
    first = snapshot(daemon, base)["id"]
    mid = c.create_sandbox(language="bash", from_snapshot=first, limits={"disk_mib": 8}).id
    # A changed file, a new directory, and a directory removed and made anew (opaque).
    edit = "echo edited > env/a.txt; mkdir env/new; echo n > env/new/n.txt; "
    edit += "rm -r env/lib && mkdir env/lib && echo 2b > env/lib/f2.py"
    assert c.run_in_sandbox(mid, code=edit).status == "ok"
    second = snapshot(daemon, mid)["id"]
    top = c.create_sandbox(language="bash", from_snapshot=second, limits={"disk_mib": 8}).id
    try:
        out = c.run_in_sandbox(
            top,
            code="cat env/a.txt env/new/n.txt env/lib/f2.py; ls env/lib/f1.py 2>&1 | wc -l; "
            "echo top >> env/lib/f2.py && echo top >> env/a.txt && cat env/a.txt",
        )
        assert out.status == "ok", out.stderr
        assert out.stdout.split("\n")[:6] == ["edited", "n", "2b", "1", "edited", "top"]
        assert c.run_in_sandbox(top, code="ls env/lib").stdout == "f2.py\n"
        top_work = daemon.state_dir / "sandboxes" / top / "mnt" / "work"
        mid_work = daemon.state_dir / "sandboxes" / mid / "mnt" / "work"
        assert (top_work / "env/lib/f2.py").stat().st_uid != (mid_work / "env").stat().st_uid
        c.delete_sandbox(mid)  # the sandbox a snapshot came from may go
        assert c.get_file(top, "env/new/n.txt") == b"n\n"
        status, err = call(daemon, "DELETE", f"/v1/snapshots/{first}")
        assert status == 409 and second in err["error"]["message"]
    finally:
        for box in (top, mid, base):
            with contextlib.suppress(NotFound):
                c.delete_sandbox(box)
    assert mounted(daemon.state_dir, "snapshots/") == []
    assert delete(daemon, f"/v1/snapshots/{second}") == 204
    assert delete(daemon, f"/v1/snapshots/{first}") == 204


def test_caches_are_evicted_least_recently_used_first_to_make_room(workdir: Path) -> None:
    """Over the snapshot-disk quota, a tenant's unused cache snapshots (`ttl_s`) go, least
    recently *used* first (a fork made or deleted is a use); one in use, or one kept without
    a ttl, never goes: then the new snapshot is refused (429) and nothing is left of it."""
    d = Daemon(
        workdir,
        "snaplru",
        # An empty workspace's snapshot rounds up to 1 MiB, one holding a 2 MiB file to 3.
        tenants={"q": {"max_snapshot_disk_mib": 7, "max_sandboxes": 2, "max_disk_mib": 64}},
    ).start()
    try:
        token = d.make_token("q", "sandboxes")
        with d.client(token) as c:
            box = c.create_sandbox(limits={"disk_mib": 16}).id
            kept = c.create_snapshot(box).id  # no ttl_s: kept until deleted
            c.put_file(box, "big.bin", os.urandom(2 * 1024 * 1024))
            older = c.create_snapshot(box, ttl_s=3600)
            newer = c.create_snapshot(box, ttl_s=3600)
            assert older.expires_at is not None and older.ttl_s == 3600
            assert c.get_snapshot(kept).expires_at is None
            c.delete_sandbox(c.create_sandbox(from_snapshot=older.id, limits=SMALL).id)  # used last
            last_used = c.get_snapshot(older.id).last_used_at
            assert last_used is not None and last_used > newer.created_at

            first = c.create_snapshot(box).id  # 7 + 3 MiB: `newer` makes room, not `older`
            listed = {s.id for s in c.list_snapshots()}
            assert listed == {kept, older.id, first}
            assert not (d.state_dir / "snapshots" / newer.id).exists()

            fork = c.create_sandbox(from_snapshot=older.id, limits=SMALL).id  # `older`: in use
            before = sorted(p.name for p in (d.state_dir / "snapshots").iterdir())
            with pytest.raises(QuotaExceeded) as refused:
                c.create_snapshot(box)
            assert refused.value.field == "max_snapshot_disk_mib"
            assert sorted(p.name for p in (d.state_dir / "snapshots").iterdir()) == before
            assert {s.id for s in c.list_snapshots()} == listed
            c.delete_sandbox(fork)
            second = c.create_snapshot(box).id  # unused again: now `older` goes
            assert {s.id for s in c.list_snapshots()} == {kept, first, second}
        with d.client() as admin:
            records = admin.audit(limit=1000).records
        evicted = [(r.target, r.result["for"]) for r in records if r.action == "snapshot.evict"]
        assert evicted == [(newer.id, first), (older.id, second)]
    finally:
        assert d.stop() == 0


def test_caches_expire_when_unused_for_their_ttl(workdir: Path) -> None:
    """A cache snapshot goes `ttl_s` after its last use (the sweep's, audited); while a
    sandbox started from it exists it stays, and its clock starts again when that goes. A
    snapshot without a ttl stays. A ttl over the daemon's maximum, or of 0, is refused."""
    d = Daemon(workdir, "snapttl", sandbox_sweep_s=0.2, max_snapshot_ttl_s=100).start()
    try:
        with d.client() as c:
            box = c.create_sandbox(limits={"disk_mib": 8}).id
            status, err = call(d, "POST", f"/v1/sandboxes/{box}/snapshots", {"ttl_s": 101})
            assert (status, err["error"]["code"], err["error"]["field"]) == (
                400,
                "limit_too_high",
                "ttl_s",
            )
            status, err = call(d, "POST", f"/v1/sandboxes/{box}/snapshots", {"ttl_s": 0})
            assert (status, err["error"]["field"]) == (400, "ttl_s")
            assert c.list_snapshots() == []  # refusals leave nothing

            kept = c.create_snapshot(box).id
            idle = c.create_snapshot(box, ttl_s=1).id
            used = c.create_snapshot(box, ttl_s=1).id
            fork = c.create_sandbox(from_snapshot=used).id
            deadline = time.monotonic() + 15
            while idle in {s.id for s in c.list_snapshots()} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert {s.id for s in c.list_snapshots()} == {kept, used}
            assert not (d.state_dir / "snapshots" / idle).exists()
            time.sleep(1.5)  # past `used`'s ttl, but a fork of it exists
            assert {s.id for s in c.list_snapshots()} == {kept, used}
            c.delete_sandbox(fork)
            gone_at = time.monotonic()
            while used in {s.id for s in c.list_snapshots()} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert time.monotonic() - gone_at >= 0.9  # its clock started when the fork went
            assert {s.id for s in c.list_snapshots()} == {kept}
            expired: list[str | None] = []
            while len(expired) < 2 and time.monotonic() < deadline:  # recorded just after
                records = c.audit(limit=1000).records
                expired = [r.target for r in records if r.action == "snapshot.expire"]
        assert expired == [idle, used]
    finally:
        assert d.stop() == 0
