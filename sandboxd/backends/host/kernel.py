"""The daemon's end of a Jupyter kernel in a jail: ZeroMQ sockets it binds, and executions.

The daemon owns the listening side. It binds one unix socket per channel (shell, iopub,
control) in a fresh directory of its own, before the jail exists; the jail sees that directory
read-only, and the kernel inside connects out to them
(`sandboxd.backends.jailside.kernel_launcher`). So
the daemon never connects to, opens or follows a path the sandbox could have made: it only
accepts on sockets it already holds, and the sandbox can neither replace them (read-only) nor
point the daemon anywhere else (the daemon never resolves those paths again).

Everything that arrives is hostile: the code in the kernel knows the session key (it runs in
the kernel) and can send any message. Messages are size-capped by ZeroMQ, those that fail the
signature or the schema are dropped, and only those answering the execution in progress count;
output is kept within the caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from sandboxd.backends.jailside.kernel_launcher import CHANNELS
from sandboxd.models import ExecutionError, ExecutionResult, ExecutionStatus, Limits, RichOutput

log = logging.getLogger("sandboxd.kernel")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: unix socket paths are at most 107 bytes (sun_path).
MAX_SOCKET_PATH = 107
MAX_MIME = 255
#: Where IPython, Jupyter and matplotlib keep their files: the jail's /tmp, not the workspace.
KERNEL_ENV = {
    "IPYTHONDIR": "/tmp/.ipython",  # noqa: S108  # the jail's own /tmp
    "JUPYTER_RUNTIME_DIR": "/tmp/.jupyter",  # noqa: S108  # the jail's own /tmp
    "JUPYTER_DATA_DIR": "/tmp/.jupyter",  # noqa: S108  # the jail's own /tmp
    "MPLCONFIGDIR": "/tmp/.matplotlib",  # noqa: S108  # the jail's own /tmp
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    # Debian's matplotlib reads its defaults from /etc/matplotlibrc, which jails do not see;
    # the same file is in /usr.
    "MATPLOTLIBRC": "/usr/share/matplotlib/mpl-data/matplotlibrc",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
OnEvent = Callable[[str, Any], None]
"""Gets ("stdout" | "stderr", text) and ("result", RichOutput) as they arrive."""


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


#: What one rich result costs beyond its data, against the output cap; and how many one
#: execution may bring back at most.
RESULT_OVERHEAD_BYTES = 64
MAX_RESULTS = 1000


@dataclass
class _Execution:
    """One execution in progress: what has come back for it so far."""

    msg_id: str
    output_cap: int
    on_event: OnEvent | None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0, "results": 0})
    truncated: set[str] = field(default_factory=set)
    results: list[RichOutput] = field(default_factory=list)
    displays: int = 0
    error: ExecutionError | None = None
    reply: dict[str, Any] | None = None
    idle: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    over_cap: asyncio.Event = field(default_factory=asyncio.Event)

    def _keep(self, kind: str, size: int) -> bool:
        if self.sizes[kind] + size > self.output_cap:
            self.truncated.add(kind)
            self.over_cap.set()
            return False
        self.sizes[kind] += size
        return True

    def stream(self, name: str, text: str) -> None:
        if name not in ("stdout", "stderr"):
            return
        room = self.output_cap - self.sizes[name]
        if len(text.encode()) > room:
            text = text.encode()[: max(room, 0)].decode(errors="ignore")
            self.truncated.add(name)
            self.over_cap.set()
        if not text:
            return
        self.sizes[name] += len(text.encode())
        (self.stdout if name == "stdout" else self.stderr).append(text)
        if self.on_event is not None:
            self.on_event(name, text)

    def display(self, data: Any, *, is_result: bool) -> None:
        if not isinstance(data, dict):
            return
        self.displays += 1
        for mime, value in data.items():
            if not isinstance(mime, str) or len(mime) > MAX_MIME:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            # Each item costs its name and a fixed overhead too: thousands of empty values
            # must reach the cap as surely as one large one.
            cost = len(text.encode()) + len(mime) + RESULT_OVERHEAD_BYTES
            if len(self.results) >= MAX_RESULTS or not self._keep("results", cost):
                self.truncated.add("results")
                self.over_cap.set()
                return
            out = RichOutput(mime=mime, data=text, display_id=self.displays, is_result=is_result)
            self.results.append(out)
            if self.on_event is not None:
                self.on_event("result", out)

    def fail(self, content: dict[str, Any]) -> None:
        trace = content.get("traceback")
        lines = [strip_ansi(str(x)) for x in trace] if isinstance(trace, list) else []
        self.error = ExecutionError(
            name=str(content.get("ename", ""))[:1024],
            value=str(content.get("evalue", ""))[:65536],
            traceback=lines[:1000],
        )

    def finished(self) -> bool:
        return self.idle and self.reply is not None


class KernelConnection:
    """ZeroMQ sockets bound in `sock_dir` (which must be new and the daemon's), one per served
    channel, and the executions done over them, one at a time."""

    def __init__(self, sock_dir: Path, *, uid: int, max_message_bytes: int) -> None:
        self.sock_dir = sock_dir
        self.uid = uid
        self.key = uuid.uuid4().hex + uuid.uuid4().hex
        self.session = Session(key=self.key.encode(), signature_scheme="hmac-sha256")
        self.session.username = "sandboxd"
        self.max_message_bytes = max_message_bytes
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._current: _Execution | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Future[Any]] = set()
        self._closed = False
        self.lock = asyncio.Lock()

    def bind(self) -> None:
        """Make `sock_dir` (0711, root's) and bind the channels' sockets in it, each owned by
        the sandbox's uid with mode 0600 (no other local user may connect)."""
        longest = self.sock_dir / max(CHANNELS, key=len)
        if len(str(longest).encode()) > MAX_SOCKET_PATH:
            raise OSError(f"socket path {longest} is longer than unix sockets allow")
        self.sock_dir.mkdir(mode=0o711)
        os.chmod(self.sock_dir, 0o711)  # noqa: S103  # the jail's uid traverses it; no listing
        kinds = {"shell": zmq.DEALER, "iopub": zmq.SUB, "control": zmq.DEALER}
        for name in CHANNELS:
            sock = self._ctx.socket(kinds[name])
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            sock.setsockopt(zmq.RCVHWM, 256)
            if name == "iopub":
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            path = self.sock_dir / name
            sock.bind(f"ipc://{path}")
            # Just made by us in a directory only we write: no link can be here.
            os.chown(path, self.uid, self.uid, follow_symlinks=False)
            os.chmod(path, 0o600, follow_symlinks=False)
            self._sockets[name] = sock
        self._readers = [
            asyncio.ensure_future(self._read("shell")),
            asyncio.ensure_future(self._read("iopub")),
            asyncio.ensure_future(self._read("control")),
        ]

    def close(self) -> None:
        """Close the sockets (idempotent); what waits on them is cancelled."""
        if self._closed:
            return
        self._closed = True
        for task in [*self._readers, *self._sends]:
            task.cancel()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._ctx.term()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()

    async def _send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg = self.session.msg(msg_type, content)
        frames = self.session.serialize(msg)
        await self._sockets[channel].send_multipart(frames)
        return str(msg["header"]["msg_id"])

    async def _request(
        self, channel: str, msg_type: str, content: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        msg_id = await self._send(channel, msg_type, content)
        self._pending[msg_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(msg_id, None)

    async def _read(self, channel: str) -> None:
        sock = self._sockets[channel]
        while True:
            frames = await sock.recv_multipart()
            try:
                msg = self._parse(frames)
            except Exception:  # hostile input: drop it, whatever it is
                log.debug("dropped a malformed message on %s", channel)
                continue
            if msg is not None:
                self._dispatch(channel, msg)

    def _parse(self, frames: list[bytes]) -> dict[str, Any] | None:
        _, parts = self.session.feed_identities(frames, copy=True)
        msg = self.session.deserialize(parts, content=True, copy=True)
        parts_ok = (msg.get(k) for k in ("header", "parent_header", "content"))
        return msg if all(isinstance(part, dict) for part in parts_ok) else None

    def _dispatch(self, channel: str, msg: dict[str, Any]) -> None:
        parent_id = msg["parent_header"].get("msg_id")
        msg_type = msg["header"].get("msg_type")
        content: dict[str, Any] = msg["content"]
        if channel in ("shell", "control"):
            fut = self._pending.get(parent_id) if isinstance(parent_id, str) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        ex = self._current
        if ex is None or parent_id != ex.msg_id:
            return
        if msg_type == "stream":
            ex.stream(str(content.get("name")), str(content.get("text", "")))
        elif msg_type in ("display_data", "execute_result", "update_display_data"):
            ex.display(content.get("data"), is_result=msg_type == "execute_result")
        elif msg_type == "error":
            ex.fail(content)
        elif msg_type == "status" and content.get("execution_state") == "idle":
            ex.idle = True
            if ex.finished():
                ex.done.set()

    async def wait_ready(self, timeout_s: float, alive: Callable[[], bool]) -> None:
        """Until the kernel answers on shell and publishes on iopub (its status for the same
        request), so that no output of a first execution is lost."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            ex = self._start("kernel_info_request", {}, 0, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.done.wait(), 0.5)
            self.end(ex)
            if ex.done.is_set():
                return
        raise TimeoutError("the kernel did not answer")

    async def interrupt(self) -> None:
        """Ask the kernel to interrupt (it raises KeyboardInterrupt in the running code)."""
        with contextlib.suppress(TimeoutError, zmq.ZMQError):
            await self._request("control", "interrupt_request", {}, 2.0)

    def begin(self, code: str, output_cap: int, on_event: OnEvent | None) -> _Execution:
        """Send `code` for execution; the returned execution's `done` is set once the kernel
        has replied and gone idle."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        return self._start("execute_request", content, output_cap, on_event)

    def _start(
        self, msg_type: str, content: dict[str, Any], output_cap: int, on_event: OnEvent | None
    ) -> _Execution:
        msg = self.session.msg(msg_type, content)
        ex = _Execution(str(msg["header"]["msg_id"]), output_cap, on_event)
        self._current = ex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ex.msg_id] = fut

        def replied(f: asyncio.Future[dict[str, Any]]) -> None:
            if not f.cancelled():
                ex.reply = f.result()["content"]
                if ex.finished():
                    ex.done.set()

        fut.add_done_callback(replied)
        sending = self._sockets["shell"].send_multipart(self.session.serialize(msg))
        self._sends.add(asyncio.ensure_future(sending))
        self._sends = {t for t in self._sends if not t.done()}
        return ex

    def end(self, ex: _Execution) -> None:
        self._pending.pop(ex.msg_id, None)
        if self._current is ex:
            self._current = None


def build_result(
    ex: _Execution, status: ExecutionStatus | None, message: str | None, wall_s: float
) -> ExecutionResult:
    """The result of `ex`: `status` if the daemon ended it (timeout, kill), else the kernel's."""
    reply = ex.reply or {}
    count = reply.get("execution_count")
    if status is None:
        status = "ok" if reply.get("status") == "ok" else "error"
        if status == "error" and ex.error is None:
            ex.fail(reply)
    if "results" in ex.truncated:
        note = "rich results past the output cap were dropped"
        message = f"{message}; {note}" if message else note
    return ExecutionResult(
        status=status,
        stdout="".join(ex.stdout),
        stderr="".join(ex.stderr),
        stdout_truncated="stdout" in ex.truncated,
        stderr_truncated="stderr" in ex.truncated,
        results=ex.results,
        error=ex.error,
        execution_count=count if isinstance(count, int) else None,
        message=message,
        wall_time_s=round(wall_s, 6),
    )


class KernelJail(Protocol):
    """What a backend gives for the jail (or container) a kernel lives in."""

    #: Done when the jail has ended (the kernel died or was killed).
    exited: asyncio.Future[None]

    def oom_kills(self) -> int: ...

    def cpu_time_s(self) -> float: ...

    async def destroy(self) -> None:
        """Kill everything of the jail and release what it held (idempotent)."""


#: After a wall or cpu timeout's interrupt, how long the code has to stop before the kill.
INTERRUPT_GRACE_S = 2.0
WATCH_S = 0.1


class Kernel:
    """A kernel in a jail: executions one at a time, each within its wall time and the
    context's cpu time, interrupted then killed past them; a death reported as such."""

    def __init__(self, conn: KernelConnection, jail: KernelJail, limits: Limits) -> None:
        self.conn = conn
        self.jail = jail
        self.limits = limits
        self.death: str | None = None  # why it is gone, once it is
        self.execution_count = 0
        self._interrupted = False
        #: Its cgroup's cpu time when it last went idle: what it burns after that (a thread
        #: left spinning by an execution) counts against `idle_cpu_s`.
        self._idle_since_cpu = 0.0

    def idle_cpu_s(self) -> float:
        """Cpu seconds used since the last execution ended (or the kernel started)."""
        return max(0.0, self.jail.cpu_time_s() - self._idle_since_cpu)

    @property
    def alive(self) -> bool:
        return self.death is None and not self.jail.exited.done()

    def death_reason(self) -> tuple[ExecutionStatus, str]:
        oom = self.jail.oom_kills()
        if self.death is not None and not oom:
            return "killed", f"the kernel was stopped: {self.death}"
        if oom:
            return "memory_limit", (
                f"the kernel was killed by the memory limit of {self.limits.memory_mib} MiB "
                f"({oom} processes)"
            )
        return "killed", "the kernel died"

    async def execute(
        self, code: str, timeout_s: float, on_event: OnEvent | None = None
    ) -> ExecutionResult:
        async with self.conn.lock:
            return await self._execute(code, timeout_s, on_event)

    async def _execute(
        self, code: str, timeout_s: float, on_event: OnEvent | None
    ) -> ExecutionResult:
        if not self.alive:  # stopped (deleted, restarted) while this waited for its turn
            gone, reason = self.death_reason()
            return ExecutionResult(status=gone, message=reason)
        loop = asyncio.get_running_loop()
        start = loop.time()
        cpu0 = self.jail.cpu_time_s()
        self._interrupted = False
        ex = self.conn.begin(code, self.limits.output_bytes, on_event)
        status: ExecutionStatus | None = None
        message: str | None = None
        try:
            done = asyncio.ensure_future(ex.done.wait())
            cap = asyncio.ensure_future(ex.over_cap.wait())
            try:
                waiting: set[asyncio.Future[Any]] = {done, cap, self.jail.exited}
                while not done.done():
                    await asyncio.wait(
                        waiting,
                        timeout=WATCH_S,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if done.done():
                        break
                    if self.jail.exited.done():
                        status, message = self.death_reason()
                        self.death = message
                        break
                    why = self._over(loop.time() - start, timeout_s, cpu0, cap.done())
                    if why is not None:
                        status, message = why
                        if not await self._stop(done):
                            self.death = f"{message}; it did not stop when interrupted"
                            message = self.death + ", so the kernel was killed"
                        break
            finally:
                done.cancel()
                cap.cancel()
        finally:
            self.conn.end(ex)
        if status is None and self._interrupted:
            status, message = "interrupted", "interrupted on request"
        self._idle_since_cpu = self.jail.cpu_time_s()
        result = build_result(ex, status, message, loop.time() - start)
        if result.execution_count is not None:
            self.execution_count = result.execution_count
        if status == "killed" or status == "memory_limit" or self.death:
            # all of it: its jail, and the sockets and reader tasks of its connection
            await self.destroy(self.death or message or f"the kernel ended: {status}")
        return result

    def _over(
        self, elapsed: float, timeout_s: float, cpu0: float, over_cap: bool
    ) -> tuple[ExecutionStatus, str] | None:
        if elapsed >= timeout_s:
            return "timeout", f"execution exceeded its wall time of {timeout_s:g} s"
        if self.jail.cpu_time_s() - cpu0 >= self.limits.cpu_time_s:
            return "cpu_limit", f"execution exceeded cpu time of {self.limits.cpu_time_s:g} s"
        if over_cap:
            return "output_limit", f"output exceeded {self.limits.output_bytes} bytes"
        return None

    async def _stop(self, done: asyncio.Future[Any]) -> bool:
        """Interrupt the execution; True if it ended within the grace time (the kernel
        lives on), False if it had to be killed."""
        await self.conn.interrupt()
        await asyncio.wait({done, self.jail.exited}, timeout=INTERRUPT_GRACE_S)
        return done.done() and not self.jail.exited.done()

    async def interrupt(self) -> None:
        if self.alive:
            self._interrupted = True
            await self.conn.interrupt()

    async def destroy(self, reason: str) -> None:
        self.death = self.death or reason
        self.conn.close()
        await self.jail.destroy()
