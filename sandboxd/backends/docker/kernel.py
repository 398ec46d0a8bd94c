"""An interpreter context's container on the Docker backend: a container like a run's, over
the sandbox's workspace, from the `jupyter` image (Debian's ipykernel and matplotlib), living
until the context ends, with the daemon's socket directory mounted read-only.

Memory and pids are the container's (the whole context); wall and cpu time are per
execution (the `Kernel` watches them). Its label names the daemon, so a daemon that dies
leaves nothing that the next one's start does not remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sandboxd.backends.base import SandboxMount
from sandboxd.backends.docker.container import Containers
from sandboxd.backends.host import cgroups
from sandboxd.backends.host.kernel import KERNEL_ENV, Kernel, KernelConnection
from sandboxd.backends.host.tasks import in_own_thread
from sandboxd.backends.host.workspace import Workspace
from sandboxd.backends.jailside import kernel_launcher
from sandboxd.errors import BackendUnavailable, InvalidRequest
from sandboxd.models import ContextSpec, Limits, RunRequest

log = logging.getLogger("sandboxd.docker.kernel")
KERNEL_IMAGE = "sandboxd/jupyter:bookworm"
READY_TIMEOUT_S = 60.0
REMOVE_WAIT_S = 10.0


class DockerKernelJail:
    """The container of one context, and its host-side tmpfs."""

    def __init__(self, container: Any, ws: Workspace, group: cgroups.RunCgroup | None) -> None:
        self.container = container
        self.ws = ws
        self.group = group
        self._oom = 0
        self.exited: asyncio.Future[None] = asyncio.ensure_future(self._watch())
        self._destroyed: asyncio.Future[None] | None = None

    async def _watch(self) -> None:
        with contextlib.suppress(Exception):  # removed under us: it has ended all the same
            await in_own_thread(self.container.wait, "sandboxd-docker-kernel-wait")
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.container.reload)
            self._oom = 1 if self.container.attrs["State"].get("OOMKilled") else 0

    def oom_kills(self) -> int:
        return self._oom

    def cpu_time_s(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            if self.group is not None:
                return self.group.cpu_time_s()
        return 0.0

    async def destroy(self) -> None:
        if self._destroyed is None:
            self._destroyed = asyncio.ensure_future(self._destroy())
        await asyncio.shield(self._destroyed)

    async def _destroy(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.container.kill)
        await asyncio.wait({self.exited}, timeout=REMOVE_WAIT_S)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.container.remove, force=True)
        await asyncio.to_thread(self.ws.destroy)


def _request(argv: list[str], spec: ContextSpec, limits: Limits) -> RunRequest:
    """The context as a run's request, so that its container is a run's in every respect
    (user, read-only root, no capabilities, seccomp, limits, network none) but its program."""
    return RunRequest(
        language="python",
        image=KERNEL_IMAGE,
        command=argv,
        env={**KERNEL_ENV, **spec.env},
        limits=limits,
    )


async def start_kernel(
    containers: Containers,
    ws: Workspace,
    context_id: str,
    sandbox: SandboxMount,
    limits: Limits,
    spec: ContextSpec,
    *,
    max_message_bytes: int,
) -> Kernel:
    """Start the context's container and wait until its kernel answers; on any failure
    nothing of it is left."""
    import docker.errors
    from docker.types import Mount

    client = containers.client
    try:
        await asyncio.to_thread(client.images.get, KERNEL_IMAGE)
    except docker.errors.ImageNotFound:
        raise BackendUnavailable(
            f"image {KERNEL_IMAGE} is missing: run `sandboxd images build jupyter`"
        ) from None
    conn: KernelConnection | None = None
    container: Any = None
    jail: DockerKernelJail | None = None
    try:
        await asyncio.to_thread(ws.create, disk_mib=limits.disk_mib)
        conn = KernelConnection(ws.root / "k", uid=sandbox.uid, max_message_bytes=max_message_bytes)
        conn.bind()
        cwd = "/workspace/" + spec.cwd if spec.cwd else "/workspace"
        argv = kernel_launcher.launcher_argv("/usr/bin/python3", conn.key, cwd)
        args = containers.container_args(context_id, _request(argv, spec, limits), ws, sandbox.uid)
        args["mounts"].append(
            Mount(kernel_launcher.JAIL_SOCKET_DIR, str(conn.sock_dir), type="bind", read_only=True)
        )
        container = await asyncio.to_thread(client.containers.create, **args)
        await asyncio.to_thread(container.start)
        await asyncio.to_thread(container.reload)
        pid = int(container.attrs["State"]["Pid"] or 0)
        group = cgroups.of_process(pid)
        if group is not None and not all(container.id in str(d) for d in group.dirs):
            group = None
        if group is None and pid:  # running, yet no cpu limit could hold: refuse, not fail open
            raise BackendUnavailable(
                f"the cgroup of context {context_id}'s container was not found; its cpu "
                "limit cannot be enforced"
            )
        jail = DockerKernelJail(container, ws, group)
        kernel = Kernel(conn, jail, limits)
        try:
            await conn.wait_ready(READY_TIMEOUT_S, lambda: not jail.exited.done())
        except TimeoutError:
            died = jail.exited.done()
            await jail.destroy()
            if jail.oom_kills():
                raise InvalidRequest(
                    f"the interpreter does not start within the sandbox's memory limit of "
                    f"{limits.memory_mib} MiB: create the sandbox with more `limits.memory_mib`",
                    field="limits.memory_mib",
                ) from None
            if died:
                raise InvalidRequest("the interpreter exited as it started", field="env") from None
            raise BackendUnavailable("the interpreter did not start") from None
        return kernel
    except BaseException:
        if conn is not None:
            conn.close()
        if jail is not None:
            await asyncio.shield(jail.destroy())
        else:
            if container is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(container.remove, force=True)
            await asyncio.shield(asyncio.to_thread(ws.destroy))
        raise
