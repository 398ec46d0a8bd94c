"""Several daemons on one host (tests, CI, two users, coder's own): none disturbs another.

Both daemons here share a cgroup root, as two daemons with default settings do: each must
reap, kill and unmount only what its own state dir left behind, hold its state dir alone, and
run its jails as host uids no other daemon uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxd.models import RunResult
from sandboxd.settings import UID_SPAN
from sandboxd.testing import leftover_cgroups, leftover_containers, sandbox_processes
from tests.conftest import DOCKER_PROBLEM
from tests.daemon import Daemon, free_port, write_toml

SHARED_ROOT = f"sandboxd-test-{os.getpid()}-shared-root"


def shared_daemon(workdir: Path, name: str, **settings: Any) -> Daemon:
    backend = {"cgroup_parent": SHARED_ROOT, **settings.pop("backend", {})}
    docker = {"enabled": DOCKER_PROBLEM is None, "pool": {"min_size": 0}}
    return Daemon(workdir, name, max_concurrent_runs=4, backend=backend, docker=docker, **settings)


@pytest.fixture(scope="module")
def first(workdir: Path) -> Iterator[Daemon]:
    d = shared_daemon(workdir, "neighbour-a").start()
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


class LongRun(threading.Thread):
    """A run of `seconds` on `d`, in the background; `result` once it ends."""

    def __init__(self, d: Daemon, seconds: float, backend: str = "nsjail") -> None:
        super().__init__(daemon=True)
        self.d, self.seconds, self.backend = d, seconds, backend
        self.result: RunResult | None = None

    def run(self) -> None:
        with self.d.client() as c:
            self.result = c.run(
                language="bash",
                code=f"echo start; sleep {self.seconds}; echo end",
                limits={"wall_time_s": 60},
                backend=self.backend,
            )

    def wait_started(self, runs: int = 1) -> None:
        with self.d.client() as c:
            for _ in range(400):  # ~20 s at most
                if c.info().active_runs >= runs and sandbox_processes(uid_bases={self.d.uid_base}):
                    return
                time.sleep(0.05)
        pytest.fail("the long run never started")


def serve_once(workdir: Path, state_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """`sandboxd serve` that is expected to refuse at once."""
    config = workdir / f"refused-{port}.toml"
    write_toml(config, {"cgroup_parent": SHARED_ROOT})
    return subprocess.run(
        [
            *(sys.executable, "-m", "sandboxd", "serve", "--config", str(config)),
            *("--state-dir", str(state_dir), "--port", str(port)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_daemon_leaves_the_first_ones_runs_pools_and_sandboxes_alone(
    workdir: Path, first: Daemon
) -> None:
    with first.client() as c:
        sandbox = c.create_sandbox(language="bash", limits={"disk_mib": 8})
        c.put_file(sandbox.id, "kept.txt", b"still here\n")
        warm_before = {k: p.hits for k, p in c.info().warm_pools.items()}
    long = LongRun(first, 6)
    long.start()
    runs = [long]
    if DOCKER_PROBLEM is None:
        runs.append(LongRun(first, 6, "docker"))
        runs[-1].start()
    long.wait_started(len(runs))

    second = shared_daemon(workdir, "neighbour-b").start()
    try:
        assert second.uid_base != first.uid_base
        assert abs(second.uid_base - first.uid_base) >= UID_SPAN
        assert second.cgroup_parent != first.cgroup_parent
        assert "reaped" not in second.log.read_text()
        with second.client() as c2:
            assert c2.run(language="python", code="print(2)").stdout == "2\n"
        # The first daemon's pool still serves (its warm jails' cgroups are intact)...
        with first.client() as c:
            result = c.run(language="python", code="print(1)")
            assert result.status == "ok", result
            after = {k: p.hits for k, p in c.info().warm_pools.items()}
            assert after["nsjail/python"] > warm_before["nsjail/python"], after
    finally:
        assert second.stop() == 0, second.log.read_text()[-3000:]
    # ...and stopping the second one (SIGTERM) killed nothing of the first's.
    for run in runs:
        assert run.is_alive(), f"the first daemon's {run.backend} run ended with the second"
    for run in runs:
        run.join(timeout=30)
        assert run.result is not None
        assert run.result.status == "ok", run.result
        assert run.result.stdout == "start\nend\n"
    with first.client() as c:
        assert c.get_file(sandbox.id, "kept.txt") == b"still here\n"
        assert c.run_in_sandbox(sandbox.id, code="cat kept.txt").stdout == "still here\n"
        c.delete_sandbox(sandbox.id)
    assert leftover_cgroups(second.cgroup_parent, include_warm=True) == []
    assert leftover_containers(second.state_dir, include_warm=True) == []


def test_a_daemon_that_cannot_start_changes_nothing(workdir: Path, first: Daemon) -> None:
    long = LongRun(first, 3)
    long.start()
    long.wait_started()
    # The same state dir: refused by its lock, in one line, before anything is touched.
    same_dir = serve_once(workdir, first.state_dir, free_port())
    assert same_dir.returncode != 0
    lines = same_dir.stderr.strip().splitlines()
    assert len(lines) == 1, same_dir.stderr
    assert "in use by another sandboxd" in lines[0]
    assert f"pid {first.proc.pid if first.proc else ''}" in lines[0]
    # The same port: refused before it reaps anything.
    busy_port = serve_once(workdir, workdir / "state-port-clash", first.port)
    assert busy_port.returncode != 0
    assert "cannot listen" in busy_port.stderr
    assert not (workdir / "state-port-clash" / "runs").exists()
    long.join(timeout=30)
    assert long.result is not None
    assert long.result.status == "ok", long.result
    assert long.result.stdout == "start\nend\n"


def test_two_daemons_never_share_a_uid_range(workdir: Path, first: Daemon) -> None:
    clash = shared_daemon(workdir, "uid-clash", backend={"uid_base": first.uid_base + 500})
    with pytest.raises(RuntimeError) as failed:
        clash.start()
    assert "the uid_base setting" in str(failed.value)
    assert "in use by another sandboxd" in str(failed.value)


def test_the_identity_and_uid_range_survive_a_restart(workdir: Path) -> None:
    d = shared_daemon(workdir, "same-again").start()
    identity = d.identity()
    assert d.stop() == 0
    # While it is stopped, its uids stay its own: a new daemon takes another block...
    other = shared_daemon(workdir, "meanwhile").start()
    try:
        assert other.uid_base != identity["uid_base"]
        # ...and it gets them back when it starts again.
        d.start()
        try:
            assert d.identity() == identity
        finally:
            assert d.stop() == 0
    finally:
        assert other.stop() == 0
