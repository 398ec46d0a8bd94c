"""The Docker backend: the same API and guarantees as nsjail, in containers.

Every container: a non-root uid of its own, read-only rootfs, the run's size-capped tmpfs
bind-mounted as /workspace, /tmp and /dev/shm (so `disk_mib` holds), `--cap-drop ALL`,
no-new-privileges, sandboxd's seccomp profile, memory (= memory+swap), pids and ulimits,
network none (or the run's egress proxy socket), docker-init as pid 1, no Docker socket,
labelled as ours, always removed. Wall time and output are enforced by the supervisor here,
cpu time from the container's cgroup; partial output is kept. The SDK is blocking, so every
call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sandboxd.backends.base import Backend, RunControl, SandboxMount
from sandboxd.backends.docker.settings import DockerConfig
from sandboxd.backends.docker.warm import DOCKER_PROFILES, DockerWarmPool, docker_warm_profile
from sandboxd.backends.host import cgroups, seccomp
from sandboxd.backends.host.egress import EgressGuard
from sandboxd.backends.host.jail_init import exit_status
from sandboxd.backends.host.output import Sink, StreamCapture, output_sink
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.tasks import Background, in_own_thread
from sandboxd.backends.host.workspace import (
    Workspace,
    collect_files,
    prepare_workspace,
    reap_run_dirs,
)
from sandboxd.backends.jailside import jail_forwarder
from sandboxd.backends.nsjail.config import BASE_ENV
from sandboxd.errors import BackendUnavailable, InvalidRequest
from sandboxd.models import MAIN_FILE, Capabilities, PoolStats, RunRequest, RunResult, Usage
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.docker")
LABEL = "sandboxd"
UID_OFFSET = 20_000
KILL_GRACE_S = 5.0
STDIN_PATH = "/run/sandboxd/stdin"
# A constant script: the request's argv arrives as positional parameters, never as shell text.
STDIN_WRAPPER = ["/bin/sh", "-c", f'exec "$@" < {STDIN_PATH}', "sh"]
POLL_S = 0.05


@dataclass
class Started:
    """A started container being watched: its cgroup, its exit, the end of its output."""

    container: Any
    group: cgroups.RunCgroup | None
    waiter: asyncio.Future[Any]
    done_reading: threading.Event
    start: float


class DockerBackend(Backend):
    name: ClassVar[str] = "docker"
    runs_images: ClassVar[bool] = True

    def __init__(self, settings: Settings, config: DockerConfig | None = None) -> None:
        self.settings = settings
        self.config = config or DockerConfig()
        self.runs_dir = settings.state_dir / "docker-runs"
        self.owner = str(settings.state_dir.resolve())
        self._client: Any = None
        self._profile = ""
        runs = settings.max_concurrent_runs
        self.slots = Slots(range(runs))
        pool = self.config.pool
        warm_slots = pool.max_size * len(DOCKER_PROFILES) if pool.enabled else 0
        self.warm_slots = Slots(range(runs, runs + warm_slots))
        self.background = Background()
        self.warm: DockerWarmPool | None = None
        self.egress = EgressGuard(settings)
        self._version = "unknown"

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
        self._profile = seccomp.render_docker_text()
        await asyncio.to_thread(self.runs_dir.mkdir, 0o711, True, True)
        await self.reap_leftovers()
        missing = [img for img in set(self.config.images.values()) if not await self._has(img)]
        if missing:
            raise BackendUnavailable(
                f"images {sorted(missing)} are missing: run `sandboxd images build`"
            )
        if self.config.pool.enabled and self.config.pool.max_size > 0:
            self.warm = DockerWarmPool(self)
            await self.warm.start()

    @property
    def client(self) -> Any:
        return self._client

    def uid_for(self, slot: int) -> int:
        return self.settings.identity.uid_base + UID_OFFSET + slot

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
        return Capabilities(
            languages=["python", "bash", "node"],
            network_modes=["none", "allowlist"] if self.settings.egress.allowlists else ["none"],
            cgroup_version=1 if (Path("/sys/fs/cgroup/memory")).is_dir() else 2,
            limits_enforced=[
                "wall_time_s",
                "cpu_time_s",
                "memory_mib",
                "pids",
                "output_bytes",
                "file_size_mib",
                "disk_mib",
            ],
            seccomp=True,
        )

    # -- one run -----------------------------------------------------------------------------

    def image_for(self, request: RunRequest) -> str:
        return request.image or self.config.images[request.language]

    def program_argv(self, request: RunRequest, *, stdin_file: bool = True) -> list[str]:
        """The container's command for a run (its stdin read from a file if it has one)."""
        if request.command is not None:
            argv = list(request.command)
        else:
            argv = {"python": ["python3", "-u"], "bash": ["bash"], "node": ["node"]}[
                request.language
            ] + [MAIN_FILE[request.language]]
        if request.network.mode == "allowlist":
            argv = jail_forwarder.wrap("python3", argv)
        if request.stdin is not None and stdin_file:
            argv = STDIN_WRAPPER + argv
        # docker always sets HOSTNAME: take it out, so the environment is exactly ours.
        return ["/usr/bin/env", "-u", "HOSTNAME", *argv]

    @staticmethod
    def environment(request: RunRequest) -> dict[str, str]:
        """The run's environment, exactly (docker's own HOSTNAME is taken out at start)."""
        env = dict(BASE_ENV)
        if request.network.mode == "allowlist":
            env |= jail_forwarder.proxy_env()
        return env | request.env

    def container_args(
        self, run_id: str, request: RunRequest, ws: Workspace, uid: int
    ) -> dict[str, Any]:
        from docker.types import Mount, Ulimit

        limits = request.limits
        env = self.environment(request)
        mounts = [
            Mount("/workspace", str(ws.work), type="bind"),
            Mount("/tmp", str(ws.fs / "tmp"), type="bind"),  # noqa: S108  # the container's /tmp, bound to its workspace
            Mount("/dev/shm", str(ws.fs / "shm"), type="bind"),  # noqa: S108  # the container's /dev/shm, bound to its workspace
        ]
        if request.stdin is not None:
            mounts.append(Mount(STDIN_PATH, str(ws.root / "stdin"), type="bind", read_only=True))
        if request.network.mode == "allowlist":
            mounts.append(
                Mount(jail_forwarder.JAIL_SOCKET, str(ws.root / "egress.sock"), type="bind")
            )
        memory = limits.memory_mib * 1024 * 1024
        return dict(
            image=self.image_for(request),
            command=self.program_argv(request),
            user=f"{uid}:{uid}",
            working_dir="/workspace",
            environment=env,
            hostname="sandbox",
            network_mode="none",
            sysctls={"net.ipv4.ping_group_range": "1 0"},  # no ping sockets, as in nsjail
            read_only=True,
            cap_drop=["ALL"],
            init=True,
            security_opt=["no-new-privileges:true", f"seccomp={self._profile}"],
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=limits.pids + 1,
            ulimits=[
                Ulimit(name="nofile", soft=self.config.nofile, hard=self.config.nofile),
                Ulimit(
                    name="fsize", soft=limits.file_size_mib << 20, hard=limits.file_size_mib << 20
                ),
                Ulimit(name="core", soft=0, hard=0),
            ],
            ipc_mode="none",
            mounts=mounts,
            stop_signal="SIGKILL",
            detach=True,
            stdin_open=False,
            tty=False,
            labels={LABEL: "1", f"{LABEL}.owner": self.owner, f"{LABEL}.run": run_id},
        )

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        if self._client is None:
            raise BackendUnavailable("the docker backend is not started")
        if request.image is not None and not await self._has(request.image):
            raise InvalidRequest(f"image {request.image!r} is not on this host", field="image")
        profile = docker_warm_profile(request, sandbox, self.config.images)
        if self.warm is not None and profile is not None:
            warm = self.warm.take(profile)
            if warm is not None:
                return await self.warm.run(run_id, request, profile, warm, control)
        slot = await self.slots.take()
        uid = sandbox.uid if sandbox else self.uid_for(slot)
        ws = Workspace(
            self.runs_dir / run_id, uid=uid, gid=uid, work_dir=sandbox.work_dir if sandbox else None
        )
        container: Any = None
        proxy = None
        created = datetime.now(UTC)
        try:
            await asyncio.to_thread(prepare_workspace, ws, request, sandbox is not None)
            if request.stdin is not None:
                await asyncio.to_thread(ws.write_run_file, "stdin", request.stdin.encode())
            proxy = await self.egress.start(request, ws.root / "egress.sock")
            container = await asyncio.to_thread(
                self._client.containers.create, **self.container_args(run_id, request, ws, uid)
            )
            result = await self._supervise(run_id, request, container, control)
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

    async def _supervise(
        self, run_id: str, request: RunRequest, container: Any, control: RunControl | None
    ) -> RunResult:
        loop = asyncio.get_running_loop()
        out, err = (control or RunControl()).captures(request.limits.output_bytes, threadsafe=True)
        overflow = asyncio.Event()
        done_reading = await self.read_output(container, output_sink(out, err, overflow))
        start = loop.time()
        await asyncio.to_thread(container.start)
        started = await self.watch_exit(container, done_reading, start)
        return await self.finish(run_id, request, started, (out, err), overflow, control)

    async def read_output(self, container: Any, sink: Sink) -> threading.Event:
        """Attach to the container's output (before it starts) and feed `sink` from a thread;
        the event is set once the stream ends."""
        done_reading = threading.Event()
        stream = await asyncio.to_thread(
            container.attach, stdout=True, stderr=True, stream=True, demux=True, logs=True
        )

        def read() -> None:
            try:
                for chunk_out, chunk_err in stream:
                    sink(chunk_out, chunk_err)
            except Exception:  # noqa: S110  # the container was killed and removed under us
                pass
            finally:
                done_reading.set()

        threading.Thread(target=read, daemon=True).start()
        return done_reading

    async def watch_exit(
        self, container: Any, done_reading: threading.Event, start: float
    ) -> Started:
        """A started container, watched: its cgroup (None if already gone) and its exit."""
        await asyncio.to_thread(container.reload)
        group = cgroups.of_process(int(container.attrs["State"]["Pid"] or 0))
        if group is not None and not all(container.id in str(d) for d in group.dirs):
            group = None  # the process is gone and its pid says nothing about the container
        waiter = in_own_thread(container.wait, "sandboxd-docker-wait")
        return Started(container, group, waiter, done_reading, start)

    async def _kill(
        self,
        run_id: str,
        container: Any,
        group: cgroups.RunCgroup | None,
        waiter: asyncio.Future[Any],
    ) -> None:
        """End a run's container: through docker, and if it has not exited soon after, by
        killing every process of its cgroup from the host. A limit never fails open."""
        try:
            await asyncio.to_thread(container.kill)
        except Exception as exc:
            log.warning("run %s: docker did not kill its container: %r", run_id, exc)
        exited, _ = await asyncio.wait({waiter}, timeout=KILL_GRACE_S)
        if not exited and group is not None:
            log.error("run %s: its container outlived the kill; killing its cgroup", run_id)
            with contextlib.suppress(OSError):
                await group.kill_all()

    async def finish(
        self,
        run_id: str,
        request: RunRequest,
        started: Started,
        captures: tuple[StreamCapture, StreamCapture],
        overflow: asyncio.Event,
        control: RunControl | None,
    ) -> RunResult:
        """Enforce wall time, cpu, output and cancel until the container exits; the result."""
        loop = asyncio.get_running_loop()
        limits = request.limits
        out, err = captures
        container, group, waiter = started.container, started.group, started.waiter
        start, done_reading = started.start, started.done_reading
        cancel = control.cancel if control is not None else asyncio.Event()
        killed_for: str | None = None
        cpu = peak = 0.0
        refused = 0
        deadline = start + limits.wall_time_s
        overflowed = asyncio.ensure_future(overflow.wait())
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            while not waiter.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    killed_for = "timeout"
                    break
                await asyncio.wait(
                    {waiter, overflowed, cancelled},
                    timeout=min(POLL_S, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if cancel.is_set():
                    killed_for = "cancelled"
                    break
                if overflow.is_set():
                    killed_for = "output_limit"
                    break
                with contextlib.suppress(OSError, ValueError):
                    if group is not None:  # sampled: docker removes the cgroup at exit
                        cpu = group.cpu_time_s()
                        peak = max(peak, group.peak_memory_bytes() / 1048576)
                        refused = group.pids_refused()
                if cpu > limits.cpu_time_s:
                    killed_for = "cpu_limit"
                    break
        finally:
            overflowed.cancel()
            cancelled.cancel()
        wall = loop.time() - start
        if killed_for is not None:
            await self._kill(run_id, container, group, waiter)
        status_code = int((await waiter).get("StatusCode", -1))
        await asyncio.to_thread(done_reading.wait, 5)
        await asyncio.to_thread(container.reload)
        state = container.attrs["State"]
        result = self._result(
            run_id,
            request,
            out,
            err,
            killed_for,
            status_code,
            bool(state.get("OOMKilled")),
            wall,
            cpu,
            peak,
        )
        notes = [result.message] if result.message else []
        if refused and result.status != "ok":
            notes.append(f"pids limit of {limits.pids} refused {refused} forks")
        if result.status == "failed" and result.exit_code in (126, 127) and err.text().strip():
            notes.append(f"cannot execute: {err.text().strip().splitlines()[-1]}")
        result.message = "; ".join(notes) or None
        return result

    def _result(
        self,
        run_id: str,
        request: RunRequest,
        out: StreamCapture,
        err: StreamCapture,
        killed_for: str | None,
        code: int,
        oom: bool,
        wall: float,
        cpu: float,
        peak: float,
    ) -> RunResult:
        limits = request.limits
        exit_code, signal_name = exit_status(code)  # docker-init's status, as tini's
        message = None
        if killed_for == "cancelled":
            status, message = "cancelled", "cancelled (DELETE /v1/runs/{id}); the tree was killed"
        elif killed_for == "timeout":
            status, message = "timeout", f"wall time limit of {limits.wall_time_s}s reached"
        elif killed_for == "output_limit":
            status = "output_limit"
            message = f"output over {limits.output_bytes} bytes on a stream; run killed"
        elif killed_for == "cpu_limit" or signal_name == "SIGXCPU":
            status, message = "cpu_limit", f"cpu time limit of {limits.cpu_time_s}s reached"
        elif oom and code != 0:
            status = "memory_limit"
            message = f"memory limit of {limits.memory_mib} MiB reached"
        elif code in (126, 127) and signal_name is None:
            status = "failed"
        elif signal_name is not None:
            status = "killed"
        else:
            status = "ok" if code == 0 else "failed"
        if killed_for is not None:
            exit_code, signal_name = None, None
        return RunResult(
            id=run_id,
            status=status,
            exit_code=exit_code,
            signal=signal_name,
            stdout=out.text(),
            stderr=err.text(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            usage=Usage(
                wall_time_s=round(wall, 4), cpu_time_s=round(cpu, 4), peak_memory_mib=round(peak, 2)
            ),
            message=message,
            backend=self.name,
            limits=limits,
        )
