"""One run's Docker container: what it is made of, and how the supervisor watches it.

Both a container created for its run (`DockerBackend`) and a warm one (`DockerWarmPool`) are
described, watched and read here, so a warm container is a cold one in every respect but its
program; neither of those modules reaches into the other.

Every container: a non-root uid of its own, read-only rootfs, the run's size-capped tmpfs
bind-mounted as /workspace, /tmp and /dev/shm (so `disk_mib` holds), `--cap-drop ALL`,
no-new-privileges, sandboxd's seccomp profile, memory (= memory+swap), pids and ulimits,
network none (or the run's egress proxy socket), docker-init as pid 1, no Docker socket,
labelled as ours. `ContainerRun` is the supervisor's `Running`: the SDK's blocking `wait` on
a thread of its own, cpu time sampled from the container's cgroup (Docker removes it at
exit), the output demuxed from the attach stream on a thread, and a kill through Docker
that falls back to killing the cgroup from the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from sandboxd.backends.docker.settings import DockerConfig
from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import BASE_ENV, exit_status
from sandboxd.backends.host.output import Sink, StreamCapture, output_sink
from sandboxd.backends.host.reporting import classify, pids_note, to_result
from sandboxd.backends.host.supervise import Supervised
from sandboxd.backends.host.tasks import in_own_thread
from sandboxd.backends.host.workspace import JAIL_CACHE, Workspace
from sandboxd.backends.jailside import jail_forwarder
from sandboxd.models import MAIN_FILE, RunRequest, RunResult
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.docker")
LABEL = "sandboxd"
UID_OFFSET = 20_000
KILL_GRACE_S = 5.0
DRAIN_S = 5.0
STDIN_PATH = "/run/sandboxd/stdin"
# A constant script: the request's argv arrives as positional parameters, never as shell text.
STDIN_WRAPPER = ["/bin/sh", "-c", f'exec "$@" < {STDIN_PATH}', "sh"]


class Containers:
    """Describes the containers of one daemon; `client` and `seccomp_profile` are set once
    the backend has reached the engine."""

    def __init__(self, settings: Settings, config: DockerConfig, owner: str) -> None:
        self.settings = settings
        self.config = config
        self.owner = owner
        self.client: Any = None
        self.seccomp_profile = ""

    def uid_for(self, slot: int) -> int:
        return self.settings.identity.uid_base + UID_OFFSET + slot

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
        if ws.cache is not None:
            mounts.append(Mount(JAIL_CACHE, str(ws.cache), type="bind"))
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
            security_opt=["no-new-privileges:true", f"seccomp={self.seccomp_profile}"],
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

    @staticmethod
    async def result(
        run_id: str, request: RunRequest, seen: Supervised, run: ContainerRun
    ) -> RunResult:
        """The run's result, from what the supervisor saw and the container's final state."""
        await asyncio.to_thread(run.container.reload)
        oom = bool(run.container.attrs["State"].get("OOMKilled"))
        limits = request.limits
        exit_code, signal_name = exit_status(seen.returncode)  # docker-init's status, as tini's
        ended = classify(seen.killed_for, limits, exit_code=exit_code, signal=signal_name, oom=oom)
        status, message = ended or ("failed", None)  # (an init's status always says one)
        if seen.killed_for is not None:
            exit_code, signal_name = None, None
        notes = [message] if message else []
        notes += pids_note(limits, run.refused, status)
        err = seen.stderr.text().strip()
        if status == "failed" and exit_code in (126, 127) and err:
            notes.append(f"cannot execute: {err.splitlines()[-1]}")
        code = (exit_code, signal_name)
        return to_result(run_id, "docker", limits, seen, (status, notes), code, run.peak)


async def _status_code(waiter: asyncio.Future[Any]) -> int:
    return int((await waiter).get("StatusCode", -1))


class ContainerRun:
    """A created container, as the supervisor's `Running` (see the module's docstring): the
    run's container made for it, started by `begin`. A warm container (docker/warm.py) is
    one started and watched ahead of its run."""

    threaded_output = True

    def __init__(self, run_id: str, container: Any) -> None:
        self.run_id = run_id
        self.container = container
        self.group: cgroups.RunCgroup | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.done_reading = threading.Event()
        self._exited: asyncio.Future[int] | None = None
        self.cpu = self.peak = 0.0
        self.refused = 0

    async def attach(self, sink: Sink) -> None:
        """Attach to the container's output (before it starts) and feed `sink` from a
        thread; `done_reading` is set once the stream ends."""
        stream = await asyncio.to_thread(
            self.container.attach, stdout=True, stderr=True, stream=True, demux=True, logs=True
        )

        def read() -> None:
            try:
                for chunk_out, chunk_err in stream:
                    sink(chunk_out, chunk_err)
            except Exception:  # noqa: S110  # the container was killed and removed under us
                pass
            finally:
                self.done_reading.set()

        threading.Thread(target=read, daemon=True).start()

    async def watch(self) -> None:
        """Once started: its cgroup (None if already gone) and a wait for its exit."""
        await asyncio.to_thread(self.container.reload)
        group = cgroups.of_process(int(self.container.attrs["State"]["Pid"] or 0))
        if group is not None and not all(self.container.id in str(d) for d in group.dirs):
            group = None  # the process is gone and its pid says nothing about the container
        self.group = group
        self.waiter = in_own_thread(self.container.wait, "sandboxd-docker-wait")

    # -- Running -----------------------------------------------------------------------------

    async def connect(
        self, out: StreamCapture, err: StreamCapture, overflow: asyncio.Event
    ) -> None:
        await self.attach(output_sink(out, err, overflow))

    async def begin(self) -> asyncio.Future[int]:
        await asyncio.to_thread(self.container.start)
        await self.watch()
        return self.exited()

    def exited(self) -> asyncio.Future[int]:
        assert self.waiter is not None  # noqa: S101  # an invariant, for mypy: watch() set it
        self._exited = asyncio.ensure_future(_status_code(self.waiter))
        return self._exited

    def cpu_time_s(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            if self.group is not None:  # sampled: docker removes the cgroup at exit
                self.cpu = self.group.cpu_time_s()
                self.peak = max(self.peak, self.group.peak_memory_bytes() / 1048576)
                self.refused = self.group.pids_refused()
        return self.cpu

    async def stop(self, killed: bool) -> None:
        """End the container if the supervisor did: through docker, and if it has not exited
        soon after, by killing every process of its cgroup from the host. A limit never
        fails open."""
        if not killed:
            return
        try:
            await asyncio.to_thread(self.container.kill)
        except Exception as exc:
            log.warning("run %s: docker did not kill its container: %r", self.run_id, exc)
        assert self.waiter is not None  # noqa: S101  # an invariant, for mypy: watch() set it
        exited, _ = await asyncio.wait({self.waiter}, timeout=KILL_GRACE_S)
        if not exited and self.group is not None:
            log.error("run %s: its container outlived the kill; killing its cgroup", self.run_id)
            with contextlib.suppress(OSError):
                await self.group.kill_all()

    async def drain(self) -> None:
        await asyncio.to_thread(self.done_reading.wait, DRAIN_S)

    async def close(self) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.cancel()
