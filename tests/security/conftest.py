"""The security suite runs on every way a jail is made: against the shared daemon (a warm
jail when one is ready, else one forked by the fork server) and against a daemon without a
warm pool, where every run's jail is forked. The suite is the same; its daemon is a
parameter. Docker's containers do not depend on it, so they run once, on the shared daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DOCKER_PROBLEM
from tests.daemon import Daemon

JAIL_PATHS = ["shared", "forked"]


@pytest.fixture(scope="session")
def forked_daemon(workdir: Path) -> Iterator[Daemon]:
    """A daemon without a warm pool: the fork server forks every nsjail run's jail."""
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


@pytest.fixture(scope="session", params=JAIL_PATHS)
def daemon(request: pytest.FixtureRequest, daemon: Daemon) -> Daemon:
    if request.param == "shared":
        return daemon
    forked: Daemon = request.getfixturevalue("forked_daemon")
    return forked


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
