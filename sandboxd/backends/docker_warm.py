"""Warm containers for the Docker backend: started ahead of demand, interpreter waiting.

A warm container is created and started exactly like a run's (same image, uid, mounts,
limits, seccomp, cap-drop), running `warm_boot` with its stdin attached. A run that fits it
(python, the default image and the default memory, pids and file-size limits, which a
started container keeps) gets its disk cap and files from the host, then the handover and
its stdin on the container's stdin. One container serves one run and is removed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandboxd import warm_boot
from sandboxd.backends.base import (
    RunControl,
    SandboxMount,
    Sink,
    capture_pair,
    collect_files,
    output_sink,
)
from sandboxd.backends.nsjail_warm import BOOT_SOURCE, STARTUP_ENV_PREFIXES, NsjailWarmPool
from sandboxd.errors import Overloaded
from sandboxd.models import Limits, PoolStats, RunRequest, RunResult
from sandboxd.pool import WarmPool
from sandboxd.workspace import Workspace, write_request_files

if TYPE_CHECKING:
    from sandboxd.backends.docker import DockerBackend, Started

log = logging.getLogger("sandboxd.docker.warm")
READY_TIMEOUT_S = 60.0


def docker_warm_profile(
    request: RunRequest, sandbox: SandboxMount | None, default_image: str
) -> str | None:
    """The pool a run can be served from, or None when it needs its own container."""
    if sandbox is not None or request.command is not None or request.network.mode != "none":
        return None
    if request.language != "python" or request.image not in (None, default_image):
        return None
    if any(key.startswith(STARTUP_ENV_PREFIXES) for key in request.env):
        return None
    fixed, defaults = request.limits, Limits()
    if (fixed.memory_mib, fixed.pids, fixed.file_size_mib) != (
        defaults.memory_mib,
        defaults.pids,
        defaults.file_size_mib,
    ):
        return None
    return "python"


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

    def __init__(self) -> None:
        self.ready = threading.Event()
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
                if len(self._head) < len(warm_boot.READY):
                    return
                if not self._head.startswith(warm_boot.READY):
                    return  # never ready: the pool gives up on it after the timeout
                out = self._head[len(warm_boot.READY) :] or None
                self.ready.set()
            self._pending.append((out, err))

    def connect(self, sink: Sink) -> None:
        """From now on the output goes to `sink` (what came before READY's end first)."""
        with self._lock:
            for out, err in self._pending:
                sink(out, err)
            self._pending.clear()
            self._sink = sink


@dataclass
class WarmContainer:
    slot: int
    ws: Workspace
    started: Started
    router: Router
    stdin: Any


class DockerWarmPool:
    """The Docker backend's warm pool (python in the default image)."""

    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self.pool: WarmPool[WarmContainer] = WarmPool(
            "docker/python", backend.config.pool, self._prepare, self._discard
        )

    async def start(self) -> None:
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()

    def stats(self) -> dict[str, PoolStats]:
        return {"python": self.pool.stats()}

    def take(self) -> WarmContainer | None:
        return self.pool.take()

    async def _prepare(self) -> WarmContainer:
        b = self.backend
        slot = b.warm_slots.try_take()
        if slot is None:
            raise Overloaded("every warm slot is in use")
        name = "warm_" + secrets.token_hex(8)
        uid = b.uid_for(slot)
        ws = Workspace(b.runs_dir / name, uid=uid, gid=uid)
        container: Any = None
        stdin: Any = None
        try:
            template = RunRequest(language="python", code="")
            await asyncio.to_thread(ws.create, disk_mib=template.limits.disk_mib)
            args = b.container_args(name, template, ws, uid)
            args["command"] = ["/usr/bin/env", "-u", "HOSTNAME", "python3", "-u", "-c", BOOT_SOURCE]
            container = await asyncio.to_thread(create_with_stdin_once, b.client, args)
            router = Router()
            done_reading = await b.read_output(container, router.feed)
            stdin = await asyncio.to_thread(
                container.attach_socket, params={"stdin": 1, "stream": 1}
            )
            await asyncio.to_thread(container.start)
            if not await asyncio.to_thread(router.ready.wait, READY_TIMEOUT_S):
                raise RuntimeError("the warm container did not become ready")
            started = await b.watch_exit(container, done_reading, 0.0)
            return WarmContainer(slot, ws, started, router, stdin)
        except BaseException:
            await asyncio.shield(self._destroy(slot, ws, container, stdin))
            raise

    async def _discard(self, warm: WarmContainer) -> None:
        await self._destroy(warm.slot, warm.ws, warm.started.container, warm.stdin)

    async def _destroy(self, slot: int, ws: Workspace, container: Any, stdin: Any) -> None:
        try:
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()
            if container is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(container.remove, force=True)
            await asyncio.to_thread(ws.destroy)
        finally:
            self.backend.warm_slots.release(slot)

    @staticmethod
    def _hand_over(run_id: str, warm: WarmContainer, request: RunRequest) -> None:
        """Name the run dir after its run; the run's disk cap and files (in a thread)."""
        warm.ws.rename(warm.ws.root.with_name(run_id))
        if request.limits.disk_mib != Limits().disk_mib:
            warm.ws.resize(disk_mib=request.limits.disk_mib)
        write_request_files(warm.ws, request, persistent=False)

    @staticmethod
    def _send(stdin: Any, data: bytes) -> None:
        """Write the handover and the run's stdin, then end the container's stdin
        (stdin_once). A program that never reads its stdin blocks this until `_abort`."""
        raw: socket.socket = getattr(stdin, "_sock", stdin)
        with contextlib.suppress(OSError):
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)

    @staticmethod
    def _abort(stdin: Any) -> None:
        raw: socket.socket = getattr(stdin, "_sock", stdin)
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    async def run(
        self, run_id: str, request: RunRequest, warm: WarmContainer, control: RunControl | None
    ) -> RunResult:
        b = self.backend
        loop = asyncio.get_running_loop()
        created = datetime.now(UTC)
        try:
            await asyncio.to_thread(self._hand_over, run_id, warm, request)
            out, err = capture_pair(control, request.limits.output_bytes, threadsafe=True)
            overflow = asyncio.Event()
            warm.router.connect(output_sink(out, err, overflow))
            payload = NsjailWarmPool.handover_message(request)
            if request.stdin is not None:
                payload += request.stdin.encode()
            if warm.started.group is not None:
                warm.started.group.start_accounting()  # the interpreter's start is not the run's
            warm.started.start = loop.time()
            # Not awaited first: a run that leaves its stdin unread must still be supervised.
            sender = asyncio.ensure_future(asyncio.to_thread(self._send, warm.stdin, payload))
            try:
                result = await b.finish(
                    run_id, request, warm.started, (out, err), overflow, control
                )
            finally:
                if not sender.done():
                    await asyncio.to_thread(self._abort, warm.stdin)
                await sender
            await collect_files(result, warm.ws, request, b.settings)
            result.created_at = created
            return result
        finally:
            b.background.spawn(self._retire(warm))

    async def _retire(self, warm: WarmContainer) -> None:
        try:
            await self._discard(warm)
        finally:
            self.pool.replenish()
