"""The daemon puts the kernel's cgroup moves in `favordynmods` mode (no RCU grace period per
move) on the host's cgroup2 mount, keeping that mount's other options."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandboxd.backends.host.cgroup_moves import OPTION, cgroup2_mounts
from tests.daemon import Daemon

SAMPLE = (
    "25 18 0:22 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
    "30 18 0:27 / /sys/fs/cgroup/uni\\040fied rw,nosuid,relatime shared:14 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "31 18 0:28 / /mnt rw - tmpfs tmpfs rw\n"
)


def test_cgroup2_mounts_are_found_with_their_options() -> None:
    assert cgroup2_mounts(SAMPLE) == {
        Path("/sys/fs/cgroup/uni fied"): {"rw", "nsdelegate", "memory_recursiveprot"}
    }


def _turn_off(path: Path) -> None:
    """Remount `path` with exactly its current options but `favordynmods` (a test of the
    daemon's remount must start from the kernel's default mode)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] != str(path):
            continue
        rest = fields[fields.index("-") + 1 :]
        options = [o for o in fields[5].split(",") + rest[2].split(",") if o != OPTION]
        argv = ["mount", "--options-mode", "ignore", "-o", ",".join(["remount", *options])]
        subprocess.run([*argv, str(path)], check=True, timeout=10)
        return
    raise AssertionError(f"{path} is not mounted")


def test_a_started_daemon_makes_cgroup_moves_fast(workdir: Path) -> None:
    mounts = cgroup2_mounts(Path("/proc/self/mountinfo").read_text())
    assert mounts, "this host has no cgroup2 mount: the daemon cannot use favordynmods"
    for path in mounts:
        _turn_off(path)
    before = cgroup2_mounts(Path("/proc/self/mountinfo").read_text())
    assert not any(OPTION in options for options in before.values())
    daemon = Daemon(workdir, "moves").start()
    try:
        after = cgroup2_mounts(Path("/proc/self/mountinfo").read_text())
    finally:
        assert daemon.stop() == 0
    assert set(after) == set(before)
    assert any(OPTION in options for options in after.values())
    for path, options in before.items():  # the mount kept every option it had
        assert options - {OPTION} <= after[path]
