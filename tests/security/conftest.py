"""The security suite runs on every way an nsjail jail is made: against the shared daemon (a
warm jail when one is ready, else one forked by the fork server) and against a daemon without a
warm pool, where every run's jail is forked (`tests/conftest.py`: `forked_daemon`,
`JAIL_PATHS`). The suite is the same; its daemon is a parameter. Docker's containers do not
depend on it, so they run once, on the shared daemon."""

from __future__ import annotations

import pytest

from tests.conftest import JAIL_PATHS, on_every_jail_path
from tests.daemon import Daemon


@pytest.fixture(scope="session", params=JAIL_PATHS)
def daemon(request: pytest.FixtureRequest, daemon: Daemon) -> Daemon:
    return on_every_jail_path(request, daemon)
