"""The tiny init every run starts under, how its exit status reads, and the base environment.

In a fresh pid namespace the first process is its init, and the kernel treats an init
specially: signals it has no handler for are dropped (a program's own SIGKILL, SIGTERM,
abort() do nothing, or turn into something else), and orphans are reparented to it, so a
program that never waits leaves zombies. Programs behave as on a normal host only as pid 2,
under an init that reaps and forwards, as Docker does with `--init` (docker-init is tini).
The nsjail backend does the same with Debian's static `tini` (static, so it runs in any
rootfs), started as pid 1 with the program as its child. A jail sees it where the host has
it when that is below the host paths the jail sees already (the default `ro_paths`: /usr);
else (a `rootfs`) it is bind-mounted read-only at /dev/init.

Both backends read the init's exit status the same way, here: tini exits with the child's
status, or 128+N when signal N killed it. A program that itself exits with 129..192 reads as
a signal death, on both backends alike (the status an init reports cannot tell them apart).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from sandboxd.errors import BackendUnavailable

#: Where the init is, host side: the static build first (it needs no library of the jail's).
INIT_CANDIDATES = (Path("/usr/bin/tini-static"), Path("/usr/bin/tini"))
#: Where a jail sees it if no host path the jail sees has it: /dev is a directory nsjail
#: creates (or a tmpfs, with a `rootfs`), so the mount point can be made in every layout.
JAIL_INIT = "/dev/init"
#: Processes of a jail's cgroup that are not the program's: nsjail (its supervisor) and the
#: init. The cgroup's pids limit is the run's `pids` plus these.
OVERHEAD_PIDS = 2
#: The environment every sandboxed program starts with, under either backend (a request's
#: `env` is laid over it).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace", "LANG": "C.UTF-8"}


def host_init() -> Path:
    """The init binary to bind into jails; refuses to go on without one."""
    for path in INIT_CANDIDATES:
        if path.is_file():
            return path
    raise BackendUnavailable(
        "no tini found (looked for " + ", ".join(map(str, INIT_CANDIDATES)) + "): jails run "
        "their program under it as pid 1; install the Debian package `tini` (scripts/setup.sh)"
    )


def visible_at(init: Path, ro_paths: list[str] | None) -> str | None:
    """Where a jail that sees the host's `ro_paths` (None: a rootfs) sees `init`, if it does."""
    real = init.resolve()
    for raw in ro_paths or []:
        path = Path(raw)
        if path.is_dir() and not path.is_symlink() and real.is_relative_to(path):
            return str(real)
    return None


def under_init(init: str, argv: list[str]) -> list[str]:
    """`argv` as the child of the init at `init`: it is pid 1 of the jail, the program pid 2."""
    return [init, "--", *argv]


def exit_status(code: int) -> tuple[int | None, str | None]:
    """(exit code, signal name) of a program from its init's exit status: 128+N is a death
    by signal N (then no exit code), anything else the program's own exit code."""
    if 128 < code < 128 + 65:
        with contextlib.suppress(ValueError):  # real-time signals have no name: a code
            return None, signal.Signals(code - 128).name
    return code, None
