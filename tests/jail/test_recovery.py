"""Crash recovery: `kill -9` with runs in flight, then a restart on the same state directory."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sandboxd.testing import leftover_cgroups, leftover_mounts, sandbox_processes
from tests.daemon import Daemon


def fire(d: Daemon, path: str, body: dict[str, object]) -> None:
    """Start a request in the background; the daemon may die under it."""

    def call() -> None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(d.request(path, json.dumps(body).encode()), timeout=60).close()

    threading.Thread(target=call, daemon=True).start()


def wait_active(d: Daemon, n: int) -> None:
    with d.client() as c:
        for _ in range(200):  # ~10 s at most
            if c.info().active_runs >= n:
                return
            time.sleep(0.05)
    pytest.fail(f"{n} runs never became active")


def test_kill_9_with_runs_in_flight_then_restart(workdir: Path) -> None:
    d = Daemon(workdir, "phoenix", max_concurrent_runs=4).start()
    with d.client() as c:
        sb = c.create_sandbox(language="bash", limits={"disk_mib": 8})
        c.put_file(sb.id, "kept.txt", b"survives the crash\n")
        c.run_in_sandbox(sb.id, code="mkdir -p out && echo from-a-run > out/r.txt")
    sleeper = {"code": "import time; print('up', flush=True); time.sleep(120)"}
    fire(d, "/v1/runs", sleeper)
    fire(d, "/v1/runs", {**sleeper, "limits": {"memory_mib": 64}})
    fire(d, f"/v1/sandboxes/{sb.id}/runs", {"code": "echo partial > half.txt; sleep 120"})
    wait_active(d, 3)
    time.sleep(0.3)
    assert len(sandbox_processes()) >= 3
    d.stop(sig=signal.SIGKILL)

    d2 = Daemon(workdir, "phoenix", max_concurrent_runs=4).start()
    try:
        # Nothing of the dead daemon's jails is left.
        assert sandbox_processes() == []
        assert leftover_cgroups(d2.cgroup_parent) == []
        assert not [m for m in leftover_mounts(d2.state_dir) if "/runs/" in m]
        with d2.client() as c:
            # The sandbox and its files are intact, and it still runs code.
            assert c.get_sandbox(sb.id).state == "active"
            assert c.get_file(sb.id, "kept.txt") == b"survives the crash\n"
            assert c.get_file(sb.id, "out/r.txt") == b"from-a-run\n"
            assert c.get_file(sb.id, "half.txt") == b"partial\n"
            again = c.run_in_sandbox(sb.id, code="cat kept.txt")
            assert again.stdout == "survives the crash\n"
            # The runs that were in flight are recorded as interrupted.
            records = c.audit(limit=1000).records
            interrupted = [r.target for r in records if r.action == "run.interrupted"]
            assert len(interrupted) == 3
            for run_id in interrupted:
                assert run_id is not None
                record = c.get_run(run_id)
                assert record.status == "interrupted" and record.finished_at is not None
            assert sum(1 for r in interrupted if c.get_run(r).sandbox_id == sb.id) == 1
        assert d2.cli("audit", "verify").returncode == 0
    finally:
        assert d2.stop() == 0


def test_sigterm_drains_within_grace(workdir: Path) -> None:
    d = Daemon(workdir, "drain", shutdown_grace_s=5).start()
    fire(d, "/v1/runs", {"code": "import time; time.sleep(1); print('finished')"})
    wait_active(d, 1)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 8
    assert sandbox_processes() == []
    d2 = Daemon(workdir, "drain").start()
    try:
        with d2.client() as c:
            runs = [r for r in c.audit(limit=1000).records if r.action == "run.create"]
            assert runs and runs[-1].result.get("status") == "ok"
    finally:
        assert d2.stop() == 0
