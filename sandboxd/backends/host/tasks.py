"""Work beside a run: cleanups after its result, and blocking calls on threads of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("sandboxd.backend")


class Background:
    """Work left after a run's result is known (cleanups, pool refills), started a moment
    later so that it does not hold up that result's response; awaited at shutdown."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._later(coro))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.sleep(self.delay_s)
        finally:  # even when cancelled: a cleanup must run
            await coro

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


T = TypeVar("T")


def in_own_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`fn()` on a thread of its own: for calls that block as long as a container lives.
    On the loop's shared executor, a few of them would hold all its threads, and every
    short call behind them (a kill among them) would wait."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], outcome: object) -> None:
        def unless_done() -> None:
            if not future.done():  # a caller may have cancelled it
                setter(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(unless_done)

    def target() -> None:
        try:
            value = fn()
        except BaseException as error:
            deliver(future.set_exception, error)
        else:
            deliver(future.set_result, value)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
