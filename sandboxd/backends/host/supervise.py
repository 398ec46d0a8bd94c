"""Supervising one sandboxed process tree from outside: wall time, cpu time, output, kill-all."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from sandboxd.backends.host.cgroups import RunCgroup
from sandboxd.backends.host.output import StreamCapture, pump
from sandboxd.models import Limits

CPU_POLL_S = 0.05
DRAIN_S = 5.0


class Watch(Protocol):
    """What a supervisor needs of a run's caller (`backends.base.RunControl` is one): a way
    to be told to stop, and the captures its output goes to."""

    cancel: asyncio.Event

    def captures(
        self, limit: int, *, threadsafe: bool = False
    ) -> tuple[StreamCapture, StreamCapture]: ...


@dataclass
class Supervised:
    """What the supervisor saw; the backend turns it into a RunResult."""

    returncode: int
    stdout: StreamCapture
    stderr: StreamCapture
    wall_time_s: float
    killed_for: str | None  # "timeout" | "cpu_limit" | "output_limit" | "cancelled" | None
    cpu_time_s: float


async def _feed_stdin(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()


async def supervise(
    proc: asyncio.subprocess.Process,
    cgroup: RunCgroup,
    limits: Limits,
    stdin: bytes | None,
    control: Watch | None = None,
) -> Supervised:
    """Wait for `proc` while enforcing limits (and watching for a cancel); at the end kill
    everything left in `cgroup`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101, PT018  # an invariant, for mypy: PIPEs
    if control is not None:
        out, err = control.captures(limits.output_bytes)
        cancel = control.cancel
    else:
        out, err, cancel = (
            StreamCapture(limits.output_bytes),
            StreamCapture(limits.output_bytes),
            asyncio.Event(),
        )
    overflow = asyncio.Event()
    pumps = [
        asyncio.create_task(pump(proc.stdout, out, overflow.set)),
        asyncio.create_task(pump(proc.stderr, err, overflow.set)),
    ]
    feeder = (
        asyncio.create_task(_feed_stdin(proc.stdin, stdin))
        if proc.stdin is not None and stdin is not None
        else None
    )
    exited = asyncio.create_task(proc.wait())
    overflowed = asyncio.create_task(overflow.wait())
    cancelled = asyncio.create_task(cancel.wait())
    deadline = start + limits.wall_time_s
    killed_for: str | None = None
    try:
        while not exited.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                killed_for = "timeout"
                break
            await asyncio.wait(
                {exited, overflowed, cancelled},
                timeout=min(CPU_POLL_S, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if cancelled.done():
                killed_for = "cancelled"
                break
            if overflowed.done():
                killed_for = "output_limit"
                break
            if cgroup.cpu_time_s() > limits.cpu_time_s:
                killed_for = "cpu_limit"
                break
        wall = loop.time() - start
        if killed_for is not None or not exited.done() or cgroup.pids():
            await cgroup.terminate({proc.pid})  # (an empty cgroup after a plain exit: done)
        returncode = await exited
        # Every writer of the pipes was in the cgroup, so EOF follows; bound it all the same.
        _done, late = await asyncio.wait(pumps, timeout=DRAIN_S)
        for task in late:
            task.cancel()
        cpu = cgroup.cpu_time_s()
        if killed_for is None and cpu > limits.cpu_time_s:
            killed_for = "cpu_limit"
        return Supervised(returncode, out, err, wall, killed_for, cpu)
    finally:
        pending: list[asyncio.Future[Any]] = [*pumps, exited, overflowed, cancelled]
        if feeder is not None:
            pending.append(feeder)
        for fut in pending:
            if not fut.done():
                fut.cancel()
        if not exited.done() or proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
