"""The Docker backend: the same API and guarantees as nsjail, in containers.

What a container is made of, and how the supervisor watches one, is in `container.py`;
warm containers in `warm.py`. This module is the backend's lifecycle (the engine, the
images, what an earlier daemon left) and one run: its workspace, its egress proxy, its
container created, supervised and always removed. Wall time and output are enforced by the
shared supervisor, cpu time from the container's cgroup; partial output is kept. The SDK is
blocking, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sandboxd.backends.base import Backend, CacheMount, RunControl, SandboxMount
from sandboxd.backends.docker import kernel
from sandboxd.backends.docker.container import LABEL, ContainerRun, Containers
from sandboxd.backends.docker.settings import DockerConfig
from sandboxd.backends.docker.warm import DOCKER_PROFILES, DockerWarmPool, docker_warm_profile
from sandboxd.backends.host import seccomp
from sandboxd.backends.host.egress import EgressGuard
from sandboxd.backends.host.kernel import Kernel
from sandboxd.backends.host.reporting import capabilities
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.supervise import supervise
from sandboxd.backends.host.tasks import Background
from sandboxd.backends.host.workspace import (
    Workspace,
    collect_files,
    prepare_workspace,
    reap_run_dirs,
)
from sandboxd.errors import BackendUnavailable, InvalidRequest
from sandboxd.models import Capabilities, ContextSpec, Limits, PoolStats, RunRequest, RunResult
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.docker")


class DockerBackend(Backend):
    name: ClassVar[str] = "docker"
    runs_images: ClassVar[bool] = True

    def __init__(self, settings: Settings, config: DockerConfig | None = None) -> None:
        self.settings = settings
        self.config = config or DockerConfig()
        self.runs_dir = settings.state_dir / "docker-runs"
        self.owner = str(settings.state_dir.resolve())
        self._client: Any = None
        runs = settings.max_concurrent_runs
        self.slots = Slots(range(runs))
        pool = self.config.pool
        warm_slots = pool.max_size * len(DOCKER_PROFILES) if pool.enabled else 0
        self.warm_slots = Slots(range(runs, runs + warm_slots))
        self.background = Background()
        self.warm: DockerWarmPool | None = None
        self.egress = EgressGuard(settings)
        self._version = "unknown"
        self.containers = Containers(settings, self.config, self.owner)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        import docker

        try:
            self._client = await asyncio.to_thread(
                docker.DockerClient, base_url=self.config.docker_url, timeout=60
            )
            info = await asyncio.to_thread(self._client.version)
        except Exception as exc:
            raise BackendUnavailable(f"the Docker engine is not reachable: {exc}") from exc
        self._version = str(info.get("Version", "unknown"))
        self.containers.client = self._client
        self.containers.seccomp_profile = seccomp.render_docker_text()
        await asyncio.to_thread(self.runs_dir.mkdir, 0o711, True, True)
        await self.reap_leftovers()
        missing = [img for img in set(self.config.images.values()) if not await self._has(img)]
        if missing:
            raise BackendUnavailable(
                f"images {sorted(missing)} are missing: run `sandboxd images build`"
            )
        if self.config.pool.enabled and self.config.pool.max_size > 0:
            self.warm = DockerWarmPool(
                self.containers, self.warm_slots, self.runs_dir, self.background
            )
            await self.warm.start()

    def pool_stats(self) -> dict[str, PoolStats]:
        return self.warm.stats() if self.warm is not None else {}

    async def _has(self, image: str) -> bool:
        import docker.errors

        try:
            await asyncio.to_thread(self._client.images.get, image)
            return True
        except docker.errors.ImageNotFound:
            return False

    async def reap_leftovers(self) -> int:
        """Remove containers an earlier daemon on this state dir left, and their run dirs."""
        found = await asyncio.to_thread(
            self._client.containers.list,
            all=True,
            filters={"label": [f"{LABEL}.owner={self.owner}"]},
        )
        for container in found:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.remove, force=True)
        await asyncio.to_thread(reap_run_dirs, self.runs_dir)
        return len(found)

    async def close(self) -> None:
        if self.warm is not None:
            await self.warm.close()
        await self.background.drain()
        if self._client is not None:
            await self.reap_leftovers()
            await asyncio.to_thread(self._client.close)

    def version(self) -> str:
        return self._version

    def capabilities(self) -> Capabilities:
        cgroup_version = 1 if (Path("/sys/fs/cgroup/memory")).is_dir() else 2
        return capabilities(self.settings, cgroup_version)

    async def start_kernel(
        self, context_id: str, sandbox: SandboxMount, limits: Limits, spec: ContextSpec
    ) -> Kernel:
        if self._client is None:
            raise BackendUnavailable("the docker backend is not started")
        ws = Workspace(
            self.runs_dir / context_id, uid=sandbox.uid, gid=sandbox.uid, work_dir=sandbox.work_dir
        )
        return await kernel.start_kernel(
            self.containers,
            ws,
            context_id,
            sandbox,
            limits,
            spec,
            max_message_bytes=self.settings.max_limits.output_bytes + (1 << 20),
        )

    # -- one run -----------------------------------------------------------------------------

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
        cache: CacheMount | None = None,
    ) -> RunResult:
        if self._client is None:
            raise BackendUnavailable("the docker backend is not started")
        if request.image is not None and not await self._has(request.image):
            raise InvalidRequest(f"image {request.image!r} is not on this host", field="image")
        profile = docker_warm_profile(request, sandbox, self.config.images)
        if self.warm is not None and profile is not None and cache is None:
            warm = self.warm.take(profile)
            if warm is not None:
                return await self.warm.run(run_id, request, profile, warm, control)
        slot = await self.slots.take()
        uid = sandbox.uid if sandbox else self.containers.uid_for(slot)
        ws = Workspace(
            self.runs_dir / run_id, uid=uid, gid=uid, work_dir=sandbox.work_dir if sandbox else None
        )
        container: Any = None
        proxy = None
        created = datetime.now(UTC)
        try:
            await asyncio.to_thread(
                prepare_workspace,
                ws,
                request,
                sandbox is not None,
                cache.astuple() if cache else None,
            )
            if request.stdin is not None:
                await asyncio.to_thread(ws.write_run_file, "stdin", request.stdin.encode())
            proxy = await self.egress.start(request, ws.root / "egress.sock")
            args = self.containers.container_args(run_id, request, ws, uid)
            container = await asyncio.to_thread(self._client.containers.create, **args)
            running = ContainerRun(run_id, container)
            seen = await supervise(running, request.limits, control)
            result = await self.containers.result(run_id, request, seen, running)
            result.network = proxy.report if proxy is not None else None
            await collect_files(result, ws, request, self.settings)
            result.created_at = created
            return result
        finally:
            self.background.spawn(self._cleanup(container, ws, proxy, slot))

    async def _cleanup(self, container: Any, ws: Workspace, proxy: Any, slot: int) -> None:
        """After the response: the container is dead (or never started); remove it all."""
        try:
            if container is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(container.remove, force=True)
            if proxy is not None:
                await proxy.close()
            await asyncio.to_thread(ws.destroy)
        finally:
            self.slots.release(slot)
