"""A tenant's download cache: runs that ask for it (`download_cache`) share one writable
`/cache`, whatever their uids, its files one daemon uid's on disk; runs that do not ask have
none; another tenant has its own; it is capped (ENOSPC inside, never the host's disk), a
tenant without one is refused with nothing made, and it outlives a restart."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sandboxd.errors import InvalidRequest
from sandboxd.settings import DOWNLOAD_CACHE_UID_OFFSET
from tests.conftest import BackendClient
from tests.daemon import Daemon
from tests.jail.test_snapshots import mounted

pytestmark = pytest.mark.usefixtures("no_leftovers")
PROBE = 'id -u; stat -c %u /cache; printf "%s %s\\n" "$PIP_CACHE_DIR" "$XDG_CACHE_HOME"'


def cache_tree(daemon: Daemon, tenant: str) -> Path:
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:32]
    return daemon.state_dir / "caches" / digest / "mnt" / "work"


def test_runs_of_a_tenant_share_its_cache_and_no_one_else_sees_it(
    backend_client: BackendClient, daemon: Daemon
) -> None:
    c = backend_client
    mark = f"mark-{c.backend}-{os.getpid()}"
    first = c.run(
        language="bash", code=f"{PROBE}; echo fetched > /cache/{mark}", download_cache=True
    )
    assert first.status == "ok", first.stderr
    uid, owner, env = first.stdout.splitlines()
    assert uid == owner  # the run sees the cache as its own...
    assert env == "/cache/pip /cache"
    on_disk = cache_tree(daemon, "default") / mark
    assert on_disk.read_text() == "fetched\n"
    assert on_disk.stat().st_uid == daemon.uid_base + DOWNLOAD_CACHE_UID_OFFSET  # ...not on disk
    assert str(on_disk.stat().st_uid) != uid

    # A sandbox runs as a host uid of its own (not a run slot's): it shares the same cache.
    box = c.create_sandbox(language="bash").id
    try:
        again = c.run_in_sandbox(
            box,
            code=f"{PROBE}; cat /cache/{mark}; rm /cache/{mark}; echo b > /cache/{mark}.b",
            download_cache=True,
        )
        assert again.status == "ok", again.stderr
        sandbox_uid, owner, _, seen = again.stdout.splitlines()
        assert sandbox_uid == owner and seen == "fetched"
        assert not on_disk.exists()
        written = on_disk.with_name(f"{mark}.b")
        assert written.stat().st_uid == daemon.uid_base + DOWNLOAD_CACHE_UID_OFFSET
        written.unlink()
    finally:
        c.delete_sandbox(box)

    plain = c.run(language="bash", code="test -e /cache && echo there || echo none")
    assert plain.stdout == "none\n"
    mine = c.run(
        language="bash",
        code='echo "$PIP_CACHE_DIR"',
        download_cache=True,
        env={"PIP_CACHE_DIR": "/workspace/pip"},
    )
    assert mine.stdout == "/workspace/pip\n"  # the request's env wins

    token = daemon.make_token(f"other-{c.backend}", "run")
    with BackendClient(daemon.url, token, c.backend) as other:
        c.run(language="bash", code=f"echo mine > /cache/{mark}", download_cache=True)
        theirs = other.run(
            language="bash", code=f"ls -A /cache; cat /cache/{mark}", download_cache=True
        )
        assert theirs.status == "failed" and theirs.stdout == ""
        assert "No such file" in theirs.stderr
    c.run(language="bash", code=f"rm /cache/{mark}", download_cache=True)


def test_the_cache_is_capped_refused_without_a_quota_and_kept_across_a_restart(
    workdir: Path,
) -> None:
    tenants = {"small": {"download_cache_mib": 8}, "none": {"download_cache_mib": 0}}
    d = Daemon(workdir, "dlcache", tenants=tenants).start()
    try:
        with d.client(d.make_token("small", "run")) as c:
            full = c.run(
                language="bash",
                code="head -c 16M /dev/zero > /cache/big; echo $?; rm -f /cache/big; "
                "echo kept > /cache/note",
                download_cache=True,
                limits={"disk_mib": 64},
            )
            assert full.status == "ok", full.stderr
            assert full.stdout == "1\n" and "No space left" in full.stderr
        with d.client(d.make_token("none", "run")) as c:
            with pytest.raises(InvalidRequest) as refused:
                c.run(language="bash", code="true", download_cache=True)
            assert refused.value.field == "download_cache"
            assert not cache_tree(d, "none").parent.parent.exists()  # nothing made
        assert mounted(d.state_dir, "caches/")  # mounted from first use...
    finally:
        assert d.stop() == 0
    assert mounted(d.state_dir, "") == []  # ...to shutdown
    d2 = Daemon(workdir, "dlcache", tenants=tenants).start()
    try:
        with d2.client(d2.make_token("small", "run")) as c:
            kept = c.run(language="bash", code="cat /cache/note", download_cache=True)
            assert kept.stdout == "kept\n"
    finally:
        assert d2.stop() == 0
