"""What every backend's warm sandboxes share: a pool per profile, the waiters they run, and
the handovers those waiters read.

A warm sandbox (a jail, a container) is built like a run's but runs a waiter instead of the
program: `warm_boot` (profile `python`: an interpreter already started, which becomes the
run) or `warm_exec` (it `execve`s the run's argv). Which waiter a run can take, what the
waiter reads on its stdin, and how the pools of one backend start, count and stop are the
same whatever the sandbox is; only building and handing over one is a backend's own.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from sandboxd.backends.host.pool import WarmPool
from sandboxd.backends.host.pool_settings import PoolSettings
from sandboxd.backends.jailside import warm_boot, warm_exec
from sandboxd.models import PoolStats, RunRequest

T = TypeVar("T")

#: Variables the interpreter reads while it starts: a run that sets one gets an exec waiter.
STARTUP_ENV_PREFIXES = ("PYTHON", "LANG", "LC_")
BOOT_SOURCE = Path(warm_boot.__file__).read_text(encoding="utf-8")
EXEC_SOURCE = Path(warm_exec.__file__).read_text(encoding="utf-8")


def waiter(profile: str, python: str) -> tuple[list[str], bytes]:
    """The argv of the waiter a warm jail or container of `profile` starts (`python` names
    the interpreter), and what it writes on stdout once ready."""
    if profile == "python":
        return [python, "-u", "-c", BOOT_SOURCE], warm_boot.READY
    return [python, "-I", "-S", "-c", EXEC_SOURCE], warm_exec.READY


def waiter_profile(request: RunRequest) -> str:
    """`python` when a started interpreter can become the run (a python program without
    start-up variables), else `exec` (the waiter execs the run's own program)."""
    if request.language != "python" or request.command is not None:
        return "exec"
    if any(key.startswith(STARTUP_ENV_PREFIXES) for key in request.env):
        return "exec"
    return "python"


def boot_handover(env: dict[str, str]) -> bytes:
    """What `warm_boot` reads first: the run's environment, NUL-separated (names are
    checked, values NUL-free), after its length."""
    body = "\0".join(f"{k}={v}" for k, v in env.items()).encode("utf-8", "surrogateescape")
    return b"%d\n" % len(body) + body


def exec_handover(env: dict[str, str], argv: list[str]) -> bytes:
    """What `warm_exec` reads first: the environment and argv a sandbox built for the run
    would start its program with."""
    return warm_exec.pack([f"{k}={v}" for k, v in env.items()]) + warm_exec.pack(argv)


class WarmPools(Generic[T]):
    """One backend's warm pools, one `WarmPool` per profile. The backend supplies
    `prepare(profile)` and `discard(item)`; a run takes an item of a profile, and once the
    run is over `retire` discards the item and has its pool prepare a replacement."""

    def __init__(
        self,
        backend: str,
        profiles: Iterable[str],
        settings: PoolSettings,
        prepare: Callable[[str], Awaitable[T]],
        discard: Callable[[T], Coroutine[Any, Any, None]],
        may_fill: Callable[[], bool] = lambda: True,
    ) -> None:
        self.discard = discard
        self.pools: dict[str, WarmPool[T]] = {
            profile: WarmPool(
                f"{backend}/{profile}",
                settings,
                functools.partial(prepare, profile),
                discard,
                may_fill,
            )
            for profile in profiles
        }

    async def start(self) -> None:
        for pool in self.pools.values():
            await pool.start()

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()

    def stats(self) -> dict[str, PoolStats]:
        return {profile: pool.stats() for profile, pool in self.pools.items()}

    def take(self, profile: str) -> T | None:
        return self.pools[profile].take()

    async def retire(self, profile: str, item: T) -> None:
        """Discard `item`, taken from `profile`'s pool, then prepare its replacement."""
        try:
            await self.discard(item)
        finally:
            self.pools[profile].replenish()
