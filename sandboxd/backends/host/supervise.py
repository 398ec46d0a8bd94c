"""Supervising one sandboxed process tree from outside: wall time, cpu time, output, kill-all.

Every backend enforces the same limits the same way, so the loop that does it is written
once, here, over `Running`: what the loop needs of the thing that runs (connect its output,
let it go, its exit, its cpu time so far, kill all of it, the end of its output). A backend
supplies only what is its own: `ProcessRun` is a host process (nsjail) whose tree is in a
`RunCgroup`; Docker's container, watched through the SDK and its cgroup, is another.

Why the loop kills and does not trust the tree to stop: a limit never fails open. Whatever
ended the run (an exit, a limit, a cancel), `Running.stop` leaves nothing of it alive before
the result is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sandboxd.backends.host.cgroups import RunCgroup
from sandboxd.backends.host.output import StreamCapture, pump
from sandboxd.models import Limits

CPU_POLL_S = 0.05
DRAIN_S = 5.0

#: Why the supervisor ended a run before it exited on its own.
KillReason = Literal["timeout", "cpu_limit", "output_limit", "cancelled"]


class Watch(Protocol):
    """What a supervisor needs of a run's caller (`backends.base.RunControl` is one): a way
    to be told to stop, and the captures its output goes to."""

    cancel: asyncio.Event

    def captures(
        self, limit: int, *, threadsafe: bool = False
    ) -> tuple[StreamCapture, StreamCapture]: ...


class Running(Protocol):
    """What the loop needs of the thing running, whatever runs it."""

    #: Its output is fed from a thread of its own (captures must report thread-safely).
    threaded_output: bool

    async def connect(
        self, out: StreamCapture, err: StreamCapture, overflow: asyncio.Event
    ) -> None:
        """Feed its output into `out`/`err` from now on; set `overflow` (on the loop) once
        a stream went over its capture's limit."""

    async def begin(self) -> asyncio.Future[int]:
        """Let it run (wall time counts from just before): its exit status, when it comes."""

    def cpu_time_s(self) -> float:
        """Its cpu time so far (the last known, when it can no longer be read)."""

    async def stop(self, killed: bool) -> None:
        """Leave nothing of it alive; `killed`: the supervisor ended it before its exit."""

    async def drain(self) -> None:
        """Wait, bounded, for the end of its output."""

    async def close(self) -> None:
        """Release what is left of the watching (called last, also on errors)."""


@dataclass
class Supervised:
    """What the supervisor saw; the backend turns it into a RunResult."""

    returncode: int
    stdout: StreamCapture
    stderr: StreamCapture
    wall_time_s: float
    killed_for: KillReason | None
    cpu_time_s: float


async def supervise(running: Running, limits: Limits, control: Watch | None = None) -> Supervised:
    """Run `running` while enforcing `limits` (and watching for a cancel); at the end nothing
    of it is left alive."""
    loop = asyncio.get_running_loop()
    if control is not None:
        out, err = control.captures(limits.output_bytes, threadsafe=running.threaded_output)
        cancel = control.cancel
    else:
        out, err = StreamCapture(limits.output_bytes), StreamCapture(limits.output_bytes)
        cancel = asyncio.Event()
    overflow = asyncio.Event()
    overflowed = asyncio.ensure_future(overflow.wait())
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        await running.connect(out, err, overflow)
        start = loop.time()
        exited = await running.begin()
        deadline = start + limits.wall_time_s
        killed_for: KillReason | None = None
        watched: set[asyncio.Future[Any]] = {exited, overflowed, cancelled}
        while not exited.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                killed_for = "timeout"
                break
            await asyncio.wait(
                watched,
                timeout=min(CPU_POLL_S, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if cancel.is_set():
                killed_for = "cancelled"
                break
            if overflow.is_set():
                killed_for = "output_limit"
                break
            if running.cpu_time_s() > limits.cpu_time_s:
                killed_for = "cpu_limit"
                break
        wall = loop.time() - start
        await running.stop(killed_for is not None)
        returncode = await exited
        await running.drain()
        cpu = running.cpu_time_s()
        if killed_for is None and cpu > limits.cpu_time_s:
            killed_for = "cpu_limit"
        return Supervised(returncode, out, err, wall, killed_for, cpu)
    finally:
        overflowed.cancel()
        cancelled.cancel()
        await running.close()


async def drain_pumps(pumps: list[asyncio.Future[Any]]) -> None:
    """Wait, at most DRAIN_S, for the output pumps to reach EOF; cancel the late ones."""
    if pumps:
        _done, late = await asyncio.wait(pumps, timeout=DRAIN_S)
        for task in late:
            task.cancel()


async def _feed_stdin(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()


class ProcessRun:
    """A host process (started with stdout and stderr piped) whose whole tree is in
    `cgroup`: its output read on the loop, `stdin` written to it, the cgroup killed at the
    end. Every writer of the pipes is in the cgroup, so their EOF follows its kill."""

    threaded_output = False

    def __init__(
        self, proc: asyncio.subprocess.Process, cgroup: RunCgroup, stdin: bytes | None
    ) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.stdin = stdin
        self._tasks: list[asyncio.Future[Any]] = []
        self._pumps: list[asyncio.Future[Any]] = []
        self._exited: asyncio.Future[int] | None = None

    async def connect(
        self, out: StreamCapture, err: StreamCapture, overflow: asyncio.Event
    ) -> None:
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None  # noqa: S101, PT018  # an invariant, for mypy: PIPEs
        self._pumps = [
            asyncio.create_task(pump(proc.stdout, out, overflow.set)),
            asyncio.create_task(pump(proc.stderr, err, overflow.set)),
        ]
        self._tasks += self._pumps
        if proc.stdin is not None and self.stdin is not None:
            self._tasks.append(asyncio.create_task(_feed_stdin(proc.stdin, self.stdin)))

    async def begin(self) -> asyncio.Future[int]:
        self._exited = asyncio.create_task(self.proc.wait())
        self._tasks.append(self._exited)
        return self._exited

    def cpu_time_s(self) -> float:
        return self.cgroup.cpu_time_s()

    async def stop(self, killed: bool) -> None:
        exited = self._exited is not None and self._exited.done()
        if killed or not exited or self.cgroup.pids():
            await self.cgroup.terminate({self.proc.pid})  # (an empty cgroup after an exit: done)

    async def drain(self) -> None:
        await drain_pumps(self._pumps)

    async def close(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._exited is None or not self._exited.done() or self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
