"""Runs that raise a limit above the default are served, with that limit in force, by a daemon
with CAP_SYS_RESOURCE and by one without it (the usual case in a container).

A warm jail was made at the default rlimits and raised them at handover with prlimit, which
needs CAP_SYS_RESOURCE for a hard limit; without it the handover failed, and the jail built
instead collided with the run directory the warm one had already taken: HTTP 500.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxd.testing import leftover_cgroups
from tests.conftest import assert_no_leftovers
from tests.daemon import Daemon
from tests.jail.test_pool import pool, wait_ready

CAPSH = shutil.which("capsh")
#: Runs the daemon's argv (which follows) without CAP_SYS_RESOURCE, in any set.
WITHOUT_SYS_RESOURCE = [str(CAPSH), "--drop=cap_sys_resource", "--", "-c", 'exec "$0" "$@"']

LIMITS_PY = "print(open('/proc/self/limits').read())"
LIMITS_SH = "cat /proc/self/limits"
#: (language, limits, what /proc/self/limits must show: (soft, hard) per limit name)
CASES: dict[str, tuple[str, dict[str, float], dict[str, tuple[str, str]]]] = {
    "python cpu_time_s 11": ("python", {"cpu_time_s": 11}, {"cpu time": ("12", "12")}),
    "python file_size_mib 32": (
        "python",
        {"file_size_mib": 32},
        {"file size": (str(32 << 20), str(32 << 20))},
    ),
    "bash cpu_time_s 11": ("bash", {"cpu_time_s": 11}, {"cpu time": ("12", "12")}),
    "sandboxd run --timeout 30": (
        "python",
        {"wall_time_s": 30, "cpu_time_s": 30},
        {"cpu time": ("31", "31")},
    ),
    # Lowered too: a jail made at the maxima gives a default run exactly the defaults.
    "python defaults": (
        "python",
        {},
        {"cpu time": ("11", "11"), "file size": (str(16 << 20), str(16 << 20))},
    ),
    "bash defaults": ("bash", {}, {"cpu time": ("11", "11")}),
}


def rlimits(text: str) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {"cpu time": (soft, hard), ...}."""
    found = {}
    for line in text.splitlines()[1:]:
        if m := re.match(r"Max (.+?)\s{2,}(\S+)\s+(\S+)", line):
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def cap_sys_resource(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as fh:
        cap_eff = next(line for line in fh if line.startswith("CapEff:"))
    return bool(int(cap_eff.split()[1], 16) >> 24 & 1)


@pytest.fixture(scope="module", params=["as started", "without CAP_SYS_RESOURCE"])
def daemon_kind(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Daemon]:
    """A daemon with pools of one, as the tests run (root; whatever the host grants), and
    one whose capabilities lack CAP_SYS_RESOURCE for certain."""
    dropped = request.param != "as started"
    if dropped and CAPSH is None:
        pytest.fail("capsh is missing: scripts/setup.sh installs it (libcap2-bin)")
    d = Daemon(
        workdir,
        "caps-dropped" if dropped else "caps-root",
        backend={"pool": {"min_size": 1, "max_size": 1}},
    )
    d.start(wrapper=WITHOUT_SYS_RESOURCE if dropped else ())
    if dropped:
        assert not cap_sys_resource(d), "capsh must have dropped CAP_SYS_RESOURCE"
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


@pytest.mark.parametrize("name", list(CASES))
def test_a_raised_limit_takes_a_warm_jail_and_holds(daemon_kind: Daemon, name: str) -> None:
    language, limits, expected = CASES[name]
    profile = "nsjail/python" if language == "python" else "nsjail/exec"
    fields: dict[str, Any] = {"language": language, "limits": limits}
    fields["code"] = LIMITS_PY if language == "python" else LIMITS_SH
    with daemon_kind.client() as c:
        before = wait_ready(c, profile).hits
        r = c.run(**fields)
        assert pool(c, profile).hits == before + 1, "served by the warm pool"
    assert (r.status, r.exit_code) == ("ok", 0), r
    seen = rlimits(r.stdout)
    assert {key: seen[key] for key in expected} == expected, r.stdout


def test_the_daemon_says_what_it_can_raise(daemon_kind: Daemon) -> None:
    lacks = "the daemon lacks CAP_SYS_RESOURCE" in daemon_kind.log.read_text()
    assert lacks == (not cap_sys_resource(daemon_kind))
    assert_no_leftovers(daemon_kind)


def warm_python_waiters(daemon: Daemon) -> set[int]:
    """Host pids of the daemon's idle warm python waiters (not their inits)."""
    found = set()
    for group in leftover_cgroups(daemon.cgroup_parent, include_warm=True):
        for pid in map(int, (group / "cgroup.procs").read_text().split()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"python3") and b"sandboxd-warm-ready" in b"".join(argv):
                found.add(pid)
    return found


def test_a_failed_handover_falls_back_to_a_jail_built_for_the_run(daemon_kind: Daemon) -> None:
    """A warm jail that cannot take its run (here: its waiter died while it waited) is
    destroyed, and the run gets a jail of its own under the same run id: no 500."""
    with daemon_kind.client() as c:
        before = wait_ready(c).hits
        waiters = warm_python_waiters(daemon_kind)
        assert len(waiters) == 1, waiters
        os.kill(waiters.pop(), signal.SIGKILL)
        time.sleep(0.2)  # the init reaps it and exits; nothing of the pool notices
        r = c.run(code=LIMITS_PY, limits={"cpu_time_s": 11})
        assert pool(c).hits == before + 1, "the dead jail was taken"
    assert (r.status, rlimits(r.stdout)["cpu time"]) == ("ok", ("12", "12")), r
    assert "warm jail refused its limits" in daemon_kind.log.read_text()
    assert_no_leftovers(daemon_kind)
