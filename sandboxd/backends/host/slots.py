"""Run slots: each one a host uid, taken for a run and given back once its cleanup is done."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable

from sandboxd.errors import Overloaded

SLOT_WAIT_S = 30.0


class Slots:
    """Numbered run slots (each one a host uid). A run waits for one while the slots of
    finished runs are still being cleaned up; a warm pool only takes a free one."""

    def __init__(self, numbers: Iterable[int]) -> None:
        self._free = deque(numbers)
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> int | None:
        return self._free.popleft() if self._free else None

    async def take(self, timeout_s: float = SLOT_WAIT_S) -> int:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not self._free:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, end - loop.time()))
            except TimeoutError:
                raise Overloaded("no free run slot; retry later") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return self._free.popleft()

    def release(self, slot: int) -> None:
        self._free.append(slot)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
