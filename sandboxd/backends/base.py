"""The interface every sandbox backend implements."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sandboxd.errors import Overloaded
from sandboxd.models import Capabilities, PoolStats, RunRequest, RunResult
from sandboxd.output import StreamCapture
from sandboxd.settings import Settings
from sandboxd.workspace import Workspace


@dataclass
class RunControl:
    """A run in flight, seen from the daemon: its output as it comes, and a way to stop it.

    `on_start(run_id)` is called once the run has its id; `on_output(stream, chunk)` gets
    the stored part of stdout/stderr ("stdout" | "stderr"), on the event loop. Setting
    `cancel` kills the run's tree; its status is then `cancelled`.
    """

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    on_output: Callable[[str, bytes], None] | None = None
    on_start: Callable[[str], None] | None = None

    def capture(self, stream: str, limit: int, *, threadsafe: bool = False) -> StreamCapture:
        """A capture of `stream` that reports to `on_output` (from any thread if asked)."""
        sink = self.on_output
        if sink is None:
            return StreamCapture(limit)
        if threadsafe:
            loop = asyncio.get_running_loop()

            def report(chunk: bytes) -> None:
                loop.call_soon_threadsafe(sink, stream, chunk)

            return StreamCapture(limit, report)
        return StreamCapture(limit, lambda b: sink(stream, b))


def capture_pair(
    control: RunControl | None, limit: int, *, threadsafe: bool = False
) -> tuple[StreamCapture, StreamCapture]:
    control = control or RunControl()
    return (
        control.capture("stdout", limit, threadsafe=threadsafe),
        control.capture("stderr", limit, threadsafe=threadsafe),
    )


Sink = Callable[[bytes | None, bytes | None], None]


def output_sink(out: StreamCapture, err: StreamCapture, overflow: asyncio.Event) -> Sink:
    """Feed the captures from the reader thread; set `overflow` (on the loop) once over."""
    loop = asyncio.get_running_loop()

    def sink(chunk_out: bytes | None, chunk_err: bytes | None) -> None:
        for cap, chunk in ((out, chunk_out), (err, chunk_err)):
            if chunk and cap.feed(chunk):
                loop.call_soon_threadsafe(overflow.set)

    return sink


@dataclass(frozen=True)
class SandboxMount:
    """A persistent sandbox's workspace, handed to a run: its work tree and its owner uid."""

    work_dir: Path
    uid: int


class Backend(ABC):
    """Runs one request in a fresh, isolated sandbox and reports what happened.

    `run` never raises for anything the untrusted code did: timeouts, limits and crashes are
    statuses of the returned `RunResult`. It raises `SandboxdError` subclasses only for bad
    requests and for a host that cannot provide the isolation (and then runs nothing).
    """

    name: ClassVar[str]

    @abstractmethod
    async def start(self) -> None:
        """Check the host, create what runs need, and reap what a crashed daemon left behind."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every run in flight and release what `start` created."""

    @abstractmethod
    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Run `request` (limits already checked against the daemon's caps), in a fresh
        workspace, or over `sandbox`'s persistent one; `control` streams and cancels."""

    @abstractmethod
    def version(self) -> str:
        """Version of the isolation tool."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend enforces on this host."""

    def pool_stats(self) -> dict[str, PoolStats]:
        """Warm pools by profile (none unless the backend keeps any)."""
        return {}


log = logging.getLogger("sandboxd.backend")
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


async def collect_files(
    result: RunResult, ws: Workspace, request: RunRequest, settings: Settings
) -> None:
    """Put the files the request asked to collect into `result`, noting what was skipped."""
    if not request.collect:
        return
    got = await asyncio.to_thread(
        ws.collect,
        request.collect,
        max_bytes=settings.max_collect_bytes,
        max_files=settings.max_collect_files,
    )
    result.files = got.files
    if got.skipped:
        note = "not collected: " + "; ".join(got.skipped[:10])
        result.message = f"{result.message}; {note}" if result.message else note


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
