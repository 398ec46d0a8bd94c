"""Warm containers for the Docker backend: started ahead of demand, waiting for one run.

A warm container is created and started exactly like a run's (same image, uid, mounts,
limits, seccomp, cap-drop) with its stdin attached, running a waiter: `warm_boot` (profile
`python`: an interpreter already started that becomes the run) or `warm_exec` (profiles
`exec` in the python image, `node` in the node image: it `execve`s the argv a cold container
would run). A run that fits (an image with a pool, and the default memory, pids and file-size
limits, which a started container keeps) gets its disk cap and files from the host, then the
handover and its stdin on the container's stdin. One container serves one run and is
removed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandboxd.backends.base import RunControl, SandboxMount
from sandboxd.backends.docker.container import ContainerRun, Containers
from sandboxd.backends.host.jail_init import BASE_ENV
from sandboxd.backends.host.output import Sink, StreamCapture, output_sink
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.supervise import supervise
from sandboxd.backends.host.tasks import Background, in_own_thread
from sandboxd.backends.host.warm import (
    WarmPools,
    boot_handover,
    exec_handover,
    waiter,
    waiter_profile,
)
from sandboxd.backends.host.workspace import Workspace, collect_files, write_request_files
from sandboxd.errors import Overloaded
from sandboxd.models import Limits, RunRequest, RunResult

log = logging.getLogger("sandboxd.docker.warm")
READY_TIMEOUT_S = 60.0


#: Docker's warm profiles: the language whose image a container runs, and its waiter.
DOCKER_PROFILES = {
    "python": ("python", "python"),  # python programs in the python image
    "exec": ("python", "exec"),  # bash, commands, python with start-up variables there
    "node": ("node", "exec"),  # anything in the node image
}


def docker_warm_profile(
    request: RunRequest, sandbox: SandboxMount | None, images: dict[str, str]
) -> str | None:
    """The pool a run can be served from, or None when it needs its own container: runs in a
    sandbox, with an egress proxy, in an image without a pool, or with limits a started
    container cannot change (memory, pids, file size)."""
    if sandbox is not None or request.network.mode != "none":
        return None
    fixed, defaults = request.limits, Limits()
    if (fixed.memory_mib, fixed.pids, fixed.file_size_mib) != (
        defaults.memory_mib,
        defaults.pids,
        defaults.file_size_mib,
    ):
        return None
    image = request.image or images[request.language]
    if image == images["python"]:
        return waiter_profile(request)
    return "node" if image == images["node"] else None


def create_with_stdin_once(client: Any, args: dict[str, Any]) -> Any:
    """`client.containers.create(**args)` with stdin open, closed when our attachment ends
    (StdinOnce, which the SDK's high-level call does not offer)."""
    from docker.models.containers import _create_container_args

    create = _create_container_args({**args, "stdin_open": True, "version": client.api._version})
    name, platform = create.pop("name", None), create.pop("platform", None)
    config = client.api.create_container_config(**create)
    config["StdinOnce"] = True
    made = client.api.create_container_from_config(config, name=name, platform=platform)
    return client.containers.get(made["Id"])


class Router:
    """A warm container's output: until READY it is held back; then it goes to the run."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.ready = threading.Event()
        loop = asyncio.get_running_loop()
        self.became_ready: asyncio.Future[None] = loop.create_future()
        self._announce = functools.partial(loop.call_soon_threadsafe, self._set_ready)
        self._lock = threading.Lock()
        self._head = b""
        self._pending: list[tuple[bytes | None, bytes | None]] = []
        self._sink: Sink | None = None

    def feed(self, out: bytes | None, err: bytes | None) -> None:
        """Called by the reader thread with each chunk."""
        with self._lock:
            if self._sink is not None:
                self._sink(out, err)
                return
            if not self.ready.is_set() and out:
                self._head += out
                if len(self._head) < len(self.marker):
                    return
                if not self._head.startswith(self.marker):
                    return  # never ready: the pool gives up on it after the timeout
                out = self._head[len(self.marker) :] or None
                self.ready.set()
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self._announce()
            self._pending.append((out, err))

    def _set_ready(self) -> None:
        if not self.became_ready.done():
            self.became_ready.set_result(None)

    def connect(self, sink: Sink) -> None:
        """From now on the output goes to `sink` (what came before READY's end first)."""
        with self._lock:
            for out, err in self._pending:
                sink(out, err)
            self._pending.clear()
            self._sink = sink


class WarmRun(ContainerRun):
    """A warm container as the supervisor's `Running`: started and watched ahead of its run,
    its output held back by its `Router` until READY; the run begins when the handover and
    the run's stdin are sent on the attached stdin."""

    def __init__(self, name: str, container: Any, router: Router) -> None:
        super().__init__(name, container)
        self.router = router
        self.stdin: Any = None
        self.payload = b""
        self._sender: asyncio.Future[None] | None = None

    async def connect(
        self, out: StreamCapture, err: StreamCapture, overflow: asyncio.Event
    ) -> None:
        self.router.connect(output_sink(out, err, overflow))

    async def begin(self) -> asyncio.Future[int]:
        if self.group is not None:
            self.group.start_accounting()  # the interpreter's start is not the run's
        # Not awaited: a run that leaves its stdin unread must still be supervised. On a
        # thread of its own: it blocks for as long as the program leaves stdin unread.
        send = functools.partial(_send, self.stdin, self.payload)
        self._sender = in_own_thread(send, "sandboxd-docker-stdin")
        return self.exited()

    async def close(self) -> None:
        try:
            if self._sender is not None:
                if not self._sender.done():
                    await asyncio.to_thread(_abort, self.stdin)
                await self._sender
        finally:
            await super().close()


def _send(stdin: Any, data: bytes) -> None:
    """Write the handover and the run's stdin, then end the container's stdin (stdin_once).
    A program that never reads its stdin blocks this until `_abort`."""
    raw: socket.socket = getattr(stdin, "_sock", stdin)
    with contextlib.suppress(OSError):
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)


def _abort(stdin: Any) -> None:
    raw: socket.socket = getattr(stdin, "_sock", stdin)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)


@dataclass
class WarmContainer:
    slot: int
    ws: Workspace
    run: WarmRun


class DockerWarmPool(WarmPools[WarmContainer]):
    """The Docker backend's warm pools, one per profile (`DOCKER_PROFILES`). It is handed
    what it makes containers with, never the backend itself."""

    def __init__(
        self, containers: Containers, slots: Slots, runs_dir: Path, background: Background
    ) -> None:
        self.containers = containers
        self.slots = slots
        self.runs_dir = runs_dir
        self.background = background
        pool = containers.config.pool
        super().__init__("docker", DOCKER_PROFILES, pool, self._prepare, self._discard)

    async def _prepare(self, profile: str) -> WarmContainer:
        c = self.containers
        slot = self.slots.try_take()
        if slot is None:
            raise Overloaded("every warm slot is in use")
        name = "warm_" + secrets.token_hex(8)
        uid = c.uid_for(slot)
        ws = Workspace(self.runs_dir / name, uid=uid, gid=uid)
        run: WarmRun | None = None
        try:
            language, kind = DOCKER_PROFILES[profile]
            template = RunRequest(language=language, code="")
            await asyncio.to_thread(ws.create, disk_mib=template.limits.disk_mib)
            args = c.container_args(name, template, ws, uid)
            argv, marker = waiter(kind, "python3")
            args["command"] = ["/usr/bin/env", "-u", "HOSTNAME", *argv]
            container = await asyncio.to_thread(create_with_stdin_once, c.client, args)
            run = WarmRun(name, container, Router(marker))
            await run.attach(run.router.feed)
            run.stdin = await asyncio.to_thread(
                container.attach_socket, params={"stdin": 1, "stream": 1}
            )
            await asyncio.to_thread(container.start)
            try:
                await asyncio.wait_for(asyncio.shield(run.router.became_ready), READY_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError("the warm container did not become ready") from None
            await run.watch()
            return WarmContainer(slot, ws, run)
        except BaseException:
            await asyncio.shield(self._destroy(slot, ws, run))
            raise

    async def _discard(self, warm: WarmContainer) -> None:
        await self._destroy(warm.slot, warm.ws, warm.run)

    async def _destroy(self, slot: int, ws: Workspace, run: WarmRun | None) -> None:
        try:
            if run is not None and run.stdin is not None:
                with contextlib.suppress(OSError):
                    run.stdin.close()
            if run is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(run.container.remove, force=True)
            await asyncio.to_thread(ws.destroy)
        finally:
            self.slots.release(slot)

    @staticmethod
    def _hand_over(run_id: str, warm: WarmContainer, request: RunRequest) -> None:
        """Name the run dir after its run; the run's disk cap and files (in a thread)."""
        warm.ws.rename(warm.ws.root.with_name(run_id))
        if request.limits.disk_mib != Limits().disk_mib:
            warm.ws.resize(disk_mib=request.limits.disk_mib)
        write_request_files(warm.ws, request, persistent=False)

    def handover(self, profile: str, request: RunRequest) -> bytes:
        """What the waiter reads first: for `exec`, the environment and argv a container made
        for the run would have (without the stdin redirection: the stdin is attached)."""
        if DOCKER_PROFILES[profile][1] == "python":
            return boot_handover({**BASE_ENV, **request.env})
        argv = self.containers.program_argv(request, stdin_file=False)
        return exec_handover(self.containers.environment(request), argv)

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        profile: str,
        warm: WarmContainer,
        control: RunControl | None,
    ) -> RunResult:
        created = datetime.now(UTC)
        try:
            await asyncio.to_thread(self._hand_over, run_id, warm, request)
            running = warm.run
            running.run_id = run_id
            running.payload = self.handover(profile, request)
            if request.stdin is not None:
                running.payload += request.stdin.encode()
            seen = await supervise(running, request.limits, control)
            result = await self.containers.result(run_id, request, seen, running)
            await collect_files(result, warm.ws, request, self.containers.settings)
            result.created_at = created
            return result
        finally:
            self.background.spawn(self.retire(profile, warm))
