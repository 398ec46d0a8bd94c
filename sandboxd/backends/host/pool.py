"""A pool of sandboxes prepared ahead of demand, each handed to exactly one run.

The backend supplies `prepare` (make one ready sandbox) and `discard` (destroy one that will
not be used). `take` never waits: it returns a ready sandbox or None (a miss; the run then
builds its sandbox on demand). Every take is replaced in the background. The target size
adapts to load: a miss raises it (up to `max_size`), a quiet `idle_s` lowers it (down to
`min_size`). A replacement is prepared after the run that took a sandbox is over. Sandboxes
older than `max_age_s` are replaced, so none waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sandboxd.backends.host.pool_settings import PoolSettings
from sandboxd.errors import Overloaded
from sandboxd.models import PoolStats

log = logging.getLogger("sandboxd.backends.host.pool")

T = TypeVar("T")
TICK_S = 0.5
MAX_BACKOFF_S = 30.0


@dataclass
class _Ready(Generic[T]):
    item: T
    since: float


class WarmPool(Generic[T]):
    """Ready sandboxes of one profile."""

    def __init__(
        self,
        name: str,
        settings: PoolSettings,
        prepare: Callable[[], Awaitable[T]],
        discard: Callable[[T], Coroutine[Any, Any, None]],
        may_fill: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        #: Whether preparing now is welcome (a backend whose misses are cheap refills only
        #: while it runs nothing: a jail prepared under load takes cpu from the runs).
        self._may_fill = may_fill
        self.settings = settings
        self._prepare = prepare
        self._discard = discard
        self._ready: deque[_Ready[T]] = deque()
        self._preparing: set[asyncio.Task[None]] = set()
        self._discarding: set[asyncio.Task[None]] = set()
        self._target = min(settings.min_size, settings.max_size)
        self._last_miss = time.monotonic()
        self._backoff_until = 0.0
        self._backoff_s = 0.0
        self._closed = False
        self._ticker: asyncio.Task[None] | None = None
        self.hits = self.misses = self.failures = 0

    def stats(self) -> PoolStats:
        return PoolStats(
            ready=len(self._ready),
            preparing=len(self._preparing),
            target=self._target,
            hits=self.hits,
            misses=self.misses,
            failures=self.failures,
        )

    async def start(self) -> None:
        """Fill to `min_size` (waiting for it) and start the background upkeep."""
        self._fill()
        if self._preparing:
            await asyncio.wait(set(self._preparing))
        self._ticker = asyncio.create_task(self._tick())

    def take(self) -> T | None:
        """A ready sandbox, removed from the pool, or None (a miss: the pool grows).

        The caller calls `replenish` once its run is over and cleaned up: preparing the
        replacement meanwhile would compete with that run for the same kernel locks.
        """
        if self._closed:
            return None
        if self._ready:
            self.hits += 1
            return self._ready.popleft().item
        self.misses += 1
        self._last_miss = time.monotonic()
        self._target = min(self.settings.max_size, self._target + 1)
        self._fill()
        return None

    def replenish(self) -> None:
        """Start preparing replacements for what was taken."""
        self._fill()

    def _fill(self) -> None:
        if self._closed or time.monotonic() < self._backoff_until or not self._may_fill():
            return
        while (
            len(self._ready) + len(self._preparing) < self._target
            and len(self._preparing) < self.settings.max_preparing
        ):
            task = asyncio.create_task(self._prepare_one())
            self._preparing.add(task)
            task.add_done_callback(self._preparing.discard)

    async def _prepare_one(self) -> None:
        try:
            item = await self._prepare()
        except Overloaded:
            self._backoff(0.05)  # every slot is running something; try again shortly
            return
        except Exception:
            self.failures += 1
            log.exception("pool %s: preparing a sandbox failed", self.name)
            self._backoff(max(1.0, min(MAX_BACKOFF_S, self._backoff_s * 2)))
            return
        self._backoff_s = 0.0
        if self._closed:
            await self._discard(item)
            return
        self._ready.append(_Ready(item, time.monotonic()))

    def _backoff(self, seconds: float) -> None:
        self._backoff_s = seconds
        self._backoff_until = time.monotonic() + seconds

    def _drop(self, entry: _Ready[T]) -> None:
        task = asyncio.create_task(self._discard(entry.item))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            if now - self._last_miss > self.settings.idle_s and self._target > max(
                0, self.settings.min_size
            ):
                self._target -= 1
                self._last_miss = now  # one step per idle period
            while len(self._ready) > self._target:
                self._drop(self._ready.popleft())
            while self._ready and now - self._ready[0].since > self.settings.max_age_s:
                self._drop(self._ready.popleft())
            self._fill()

    async def close(self) -> None:
        """Stop refilling and destroy every ready sandbox and every one in preparation."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._preparing:
            await asyncio.wait(set(self._preparing))
        while self._ready:
            self._drop(self._ready.popleft())
        if self._discarding:
            await asyncio.wait(set(self._discarding))
