"""One run in a jail forked by the fork server: its mounts, its spec, its supervision.

The run's host side is a jail built per run's (a tmpfs workspace, a cgroup with every limit,
an egress proxy when it has an allowlist); what differs is how the jail starts. Its mounts
are cloned (`open_tree`) from the daemon's own paths, never a path the sandbox wrote, and
passed as descriptors; the jail attaches them in its own mount namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from sandboxd.backends.host import cgroups, idmap
from sandboxd.backends.host.output import StreamCapture, pump
from sandboxd.backends.host.supervise import drain_pumps
from sandboxd.backends.host.warm import waiter_profile
from sandboxd.backends.host.workspace import JAIL_CACHE, Workspace
from sandboxd.backends.jailside import fork_server
from sandboxd.backends.nsjail.forkserver import Launched, recvmsg, start_message
from sandboxd.backends.nsjail.jail import EGRESS_SOCKET, Ending, Jailer
from sandboxd.models import RunRequest

#: Exit status a forked jail's first process reports when the jail could not be set up.
SETUP_FAILED = -1
SPEC_BUFFER_BYTES = 4 << 20
SO_SNDBUFFORCE = 32


def clone_mounts(ws: Workspace, *, egress: bool) -> tuple[list[int], list[str]]:
    """Detached copies of the run's mounts (fds) and where the jail attaches each."""
    sources = (ws.work, ws.fs / "tmp", ws.fs / "shm")
    wanted: list[tuple[Path, str]] = list(zip(sources, fork_server.MOUNT_POINTS, strict=True))
    if ws.cache is not None:
        wanted.append((ws.cache, JAIL_CACHE))
    if egress:
        wanted.append((ws.root / EGRESS_SOCKET, fork_server.EGRESS_SOCKET))
    fds: list[int] = []
    try:
        for source, _target in wanted:
            fds.append(idmap.clone_tree(source))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds, [target for _source, target in wanted]


def run_spec(
    jailer: Jailer, request: RunRequest, server_uid: int, targets: list[str]
) -> dict[str, Any]:
    """What the forked jail needs to become the run: a python program is run by the forked
    interpreter itself; anything else (or an allowlist run, under its forwarder) is exec'd."""
    spec: dict[str, Any] = {"uid": server_uid, "mounts": targets}
    argv, env = jailer.program(request)
    if request.network.mode == "none" and waiter_profile(request) == "python":
        spec["entries"] = [f"{k}={v}" for k, v in env.items()]
    else:
        spec["argv"], spec["env"] = argv, env
    return spec


class ForkedRun:
    """A forked jail as `supervise` sees it (a `Running`): output from its pipes, its exit
    status from its first process, the cgroup killed at the end."""

    threaded_output = False

    def __init__(
        self,
        launched: Launched,
        group: cgroups.RunCgroup,
        spec: dict[str, Any],
        stdin: bytes | None,
    ) -> None:
        self.launched = launched
        self.group = group
        self.spec = start_message(spec)
        self.stdin = stdin
        self.failure: str | None = None
        self._tasks: list[asyncio.Future[Any]] = []
        self._pumps: list[asyncio.Future[Any]] = []
        self._exited: asyncio.Future[int] | None = None
        self._transports: list[asyncio.BaseTransport] = []

    def ending(self, returncode: int) -> Ending:
        if self.failure is not None:
            return Ending(errors=[self.failure])
        if returncode < 0:
            return Ending(signal="SIGKILL")  # its first process was killed: the cgroup's kill
        return Ending.from_status(returncode)

    async def _reader(self, fd: int) -> asyncio.StreamReader:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        self._transports.append(transport)
        return reader

    async def connect(
        self, out: StreamCapture, err: StreamCapture, overflow: asyncio.Event
    ) -> None:
        launched = self.launched
        stdout, stderr = await self._reader(launched.stdout), await self._reader(launched.stderr)
        launched.stdout = launched.stderr = -1  # the transports own them now
        self._pumps = [
            asyncio.create_task(pump(stdout, out, overflow.set)),
            asyncio.create_task(pump(stderr, err, overflow.set)),
        ]
        self._tasks += self._pumps
        if launched.stdin is not None:
            fd, launched.stdin = launched.stdin, None
            self._tasks.append(asyncio.create_task(asyncio.to_thread(_feed, fd, self.stdin)))

    async def begin(self) -> asyncio.Future[int]:
        sock = self.launched.sock
        with contextlib.suppress(OSError):  # as root: past the default buffer (big specs)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SPEC_BUFFER_BYTES)
        await asyncio.get_running_loop().sock_sendall(sock, self.spec)
        self._exited = asyncio.create_task(self._status())
        self._tasks.append(self._exited)
        return self._exited

    async def _status(self) -> int:
        msg, _ = await recvmsg(asyncio.get_running_loop(), self.launched.sock)
        if msg.startswith(b"x"):
            return int(msg[1:])
        if msg.startswith(b"e"):
            self.failure = msg[1:].decode(errors="replace")
            return SETUP_FAILED
        return -9  # no status: the first process was killed

    def cpu_time_s(self) -> float:
        return self.group.cpu_time_s()

    async def stop(self, killed: bool) -> None:
        # An exit status comes once the run's namespace is empty: then only its first
        # process is left, exiting; the cleanup after the response waits for it.
        exited = self._exited is not None and self._exited.done() and self.failure is None
        if killed or not exited or self._exited is None or self._exited.result() < 0:
            await self.group.terminate(set())

    async def drain(self) -> None:
        await drain_pumps(self._pumps)

    async def close(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for transport in self._transports:
            transport.close()
        self.launched.close()


def _feed(fd: int, data: bytes | None) -> None:
    """The run's stdin, then EOF (in a thread: the run may read it slowly, or never)."""
    try:
        view = memoryview(data or b"")
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the run closed its stdin or ended
    finally:
        os.close(fd)
