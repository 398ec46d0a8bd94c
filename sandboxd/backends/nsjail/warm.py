"""Warm jails for the nsjail backend: jails built ahead of demand, one per run.

A warm jail is built exactly like a run's (fresh tmpfs, fresh cgroup, fresh namespaces, its
own uid) but runs a waiter instead of the program. Two profiles: `python`, whose waiter is
`warm_boot`, an interpreter already started that becomes the run; `exec`, whose waiter is
`warm_exec`, which `execve`s the run's program (bash, node, commands, python runs that set
start-up variables). When a run takes a jail, the daemon, from outside the jail: re-caps the
tmpfs to the run's `disk_mib`, writes the files, sets the cgroup's memory and pids limits and
the waiter's cpu and file-size rlimits (prlimit), restarts the accounting, and only then sends
the handover and the run's stdin. Each warm jail serves one run and is destroyed after it.

As in a cold jail, the waiter is pid 2, the child of the jail's init (`jail_init`): the
handover's prlimit, its /proc and namespaces are the waiter's, never the init's.

Raising a hard rlimit takes CAP_SYS_RESOURCE, which a daemon in a container usually lacks
(lowering one never does). The pool reads the daemon's capabilities when it starts: without
that one, warm jails are made with the cpu and file-size rlimits at the daemon's
`max_limits`, and every handover lowers them to the run's, so any run a request may ask for
can take a warm jail. Should a handover fail all the same, the jail is destroyed at once
(its directory and cgroup bear the run's id by then) and the run gets a jail built for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import resource
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandboxd.backends.base import RunControl, SandboxMount
from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import BASE_ENV, OVERHEAD_PIDS, under_init
from sandboxd.backends.host.pool import TICK_S
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.supervise import ProcessRun, supervise
from sandboxd.backends.host.tasks import Background
from sandboxd.backends.host.warm import (
    WarmPools,
    boot_handover,
    exec_handover,
    waiter,
    waiter_profile,
)
from sandboxd.backends.host.workspace import Workspace, collect_files, write_request_files
from sandboxd.backends.nsjail.config import jail_config
from sandboxd.backends.nsjail.jail import Ending, Jailer
from sandboxd.errors import Overloaded
from sandboxd.models import Limits, RunRequest, RunResult

log = logging.getLogger("sandboxd.nsjail.warm")

READY_TIMEOUT_S = 15.0
NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup")
PROFILES = ("python", "exec")
CAP_SYS_RESOURCE = 24


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """The daemon's effective capability set (CapEff), as a bit mask."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def waiter_pid(group: cgroups.RunCgroup) -> int:
    """The waiter of a ready warm jail: of the jail's two processes, the init's child."""
    supervisors = group.root_pids()
    jailed = group.pids() - supervisors
    parents = {pid: parent_pid(pid) for pid in jailed}
    inits = {pid for pid, parent in parents.items() if parent in supervisors}
    waiters = [pid for pid, parent in parents.items() if parent in inits]
    if len(jailed) != 2 or len(inits) != 1 or len(waiters) != 1:
        raise RuntimeError(f"warm jail has processes {parents}, expected an init and a waiter")
    return waiters[0]


def warm_profile(request: RunRequest, sandbox: SandboxMount | None) -> str | None:
    """The pool a run can be served from, or None when it needs a jail built for it: runs in
    a sandbox (its workspace), with an egress proxy, or whose program is a path (it may not
    exist, and nsjail reports that)."""
    if sandbox is not None or request.network.mode != "none":
        return None
    if request.command is not None and "/" in request.command[0]:
        return None
    return waiter_profile(request)


def hold_namespaces(pid: int) -> list[int]:
    """Descriptors of the jail's namespaces. While the daemon holds them, the jail's exit
    does not tear them down (mount namespace teardown waits for an RCU grace period): its
    run ends sooner, and the teardown happens in the cleanup after the response."""
    fds: list[int] = []
    try:
        for ns in NAMESPACES:
            fds.append(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


@dataclass
class WarmJail:
    id: str
    slot: int
    ws: Workspace
    group: cgroups.RunCgroup
    proc: asyncio.subprocess.Process
    jail_pid: int
    limits: Limits
    ns_fds: list[int]


class NsjailWarmPool(WarmPools[WarmJail]):
    """The nsjail backend's warm pools (one per profile) and the handover of a warm jail.

    It is handed what it builds jails with (the backend's `Jailer`, cgroups, warm slots, run
    directory and background tasks), never the backend itself."""

    def __init__(
        self,
        jailer: Jailer,
        cgroup_manager: cgroups.CgroupManager,
        slots: Slots,
        runs_dir: Path,
        background: Background,
        may_fill: Callable[[], bool] = lambda: True,
    ) -> None:
        self.jailer = jailer
        self.config = jailer.config
        self.settings = jailer.settings
        self.cgroups = cgroup_manager
        self.slots = slots
        self.runs_dir = runs_dir
        self.background = background
        super().__init__(
            "nsjail", PROFILES, self.config.pool, self._prepare, self._discard, may_fill
        )
        #: Whether a handover may raise a hard rlimit; if not, jails start at the maximum.
        self.can_raise = bool(effective_capabilities() >> CAP_SYS_RESOURCE & 1)
        if not self.can_raise:
            log.info(
                "the daemon lacks CAP_SYS_RESOURCE: warm jails start with cpu and file-size "
                "rlimits at max_limits and each handover lowers them to the run's"
            )

    def _warm_limits(self) -> Limits:
        """The jail's limits until a run sets its own: the defaults (most runs keep them, and
        then nothing changes at handover), with nsjail's wall-time backstop stretched to
        cover the longest wait in the pool plus the longest run."""
        wait = self.config.pool.max_age_s + 2 * TICK_S
        most = self.settings.max_limits
        wall = most.wall_time_s + wait
        if self.can_raise:
            return Limits(wall_time_s=wall)
        return Limits(
            wall_time_s=wall, cpu_time_s=most.cpu_time_s, file_size_mib=most.file_size_mib
        )

    async def _prepare(self, profile: str) -> WarmJail:
        slot = self.slots.try_take()
        if slot is None:
            raise Overloaded("every warm slot is in use")
        jail_id = "warm_" + secrets.token_hex(8)
        uid = self.settings.identity.uid_base + slot
        ws = Workspace(self.runs_dir / jail_id, uid=uid, gid=uid)
        group: cgroups.RunCgroup | None = None
        proc: asyncio.subprocess.Process | None = None
        try:
            limits = self._warm_limits()
            await asyncio.to_thread(ws.create, disk_mib=limits.disk_mib)
            group = await asyncio.to_thread(
                self.cgroups.create,
                jail_id,
                memory_bytes=(limits.memory_mib + self.config.supervisor_memory_mib) << 20,
                pids_max=limits.pids + OVERHEAD_PIDS,
            )
            argv, expected = waiter(profile, self.config.python)
            config = jail_config(jail_id, under_init(self.jailer.init_path, argv), BASE_ENV)
            args = self.jailer.run_args(ws, uid, limits, egress=False)
            proc = await self.jailer.spawn(args, config, group, stdin=True)
            assert proc.stdout is not None  # noqa: S101  # an invariant, for mypy: a PIPE
            ready = await asyncio.wait_for(proc.stdout.readexactly(len(expected)), READY_TIMEOUT_S)
            if ready != expected:
                raise RuntimeError(f"warm jail said {ready!r} instead of ready")
            jail_pid = await asyncio.to_thread(waiter_pid, group)
            ns_fds = await asyncio.to_thread(hold_namespaces, jail_pid)
            return WarmJail(jail_id, slot, ws, group, proc, jail_pid, limits, ns_fds)
        except BaseException:
            await asyncio.shield(self._destroy(slot, ws, group, proc))
            raise

    async def _discard(self, jail: WarmJail) -> None:
        try:
            await self._destroy(jail.slot, jail.ws, jail.group, jail.proc)
        finally:
            for fd in jail.ns_fds:  # the namespaces' teardown happens now, after the run
                os.close(fd)

    async def _destroy(
        self,
        slot: int,
        ws: Workspace,
        group: cgroups.RunCgroup | None,
        proc: asyncio.subprocess.Process | None,
    ) -> None:
        try:
            # The jail first, so that nsjail reaps it (no zombie left to the host's init);
            # cleanup then takes nsjail too.
            await self.jailer.cleanup(ws, group)
            if proc is not None:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                await proc.wait()
        finally:
            self.slots.release(slot)

    # -- one run in a warm jail --------------------------------------------------------------

    def _hand_over(self, run_id: str, jail: WarmJail, request: RunRequest) -> None:
        """Give the jail the run's files and limits (in a thread): only what differs from
        the limits the jail was made with."""
        # Named after its run from now on (where the cgroup version allows renaming).
        jail.ws.rename(jail.ws.root.with_name(run_id))
        with contextlib.suppress(OSError):
            jail.group.rename(run_id)
        new, old = request.limits, jail.limits
        if new.disk_mib != old.disk_mib:
            jail.ws.resize(disk_mib=new.disk_mib)
        write_request_files(jail.ws, request, persistent=False)
        if (new.memory_mib, new.pids) != (old.memory_mib, old.pids):
            memory = (new.memory_mib + self.config.supervisor_memory_mib) << 20
            jail.group.set_limits(memory_bytes=memory, pids_max=new.pids + OVERHEAD_PIDS)
        if new.cpu_time_s != old.cpu_time_s:
            cpu = math.ceil(new.cpu_time_s) + 1
            resource.prlimit(jail.jail_pid, resource.RLIMIT_CPU, (cpu, cpu))
        if new.file_size_mib != old.file_size_mib:
            fsize = new.file_size_mib << 20
            resource.prlimit(jail.jail_pid, resource.RLIMIT_FSIZE, (fsize, fsize))
        jail.group.start_accounting()

    def handover(self, profile: str, request: RunRequest) -> bytes:
        """What the jail's waiter reads first: for `exec`, the environment and argv a cold
        jail would get."""
        env = {**BASE_ENV, **request.env}
        if profile == "python":
            return boot_handover(env)
        return exec_handover(env, self.jailer.program_argv(request))

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        profile: str,
        jail: WarmJail,
        control: RunControl | None = None,
    ) -> RunResult | None:
        """The run's result; None if the jail could not take the run's limits (e.g. memory
        below what the interpreter already uses): the caller builds a jail for it instead."""
        created = datetime.now(UTC)
        retired = False
        try:
            try:
                await asyncio.to_thread(self._hand_over, run_id, jail, request)
            except (OSError, ValueError) as exc:
                log.info("run %s: warm jail refused its limits (%s); building one", run_id, exc)
                # Now, not after the response: the jail's directory and cgroup bear the run's
                # id, which the jail built instead takes.
                retired = True
                await asyncio.shield(self.retire(profile, jail))
                return None
            stdin = self.handover(profile, request)
            if request.stdin is not None:
                stdin += request.stdin.encode()
            running = ProcessRun(jail.proc, jail.group, stdin)
            seen = await supervise(running, request.limits, control)
            log_text = await asyncio.to_thread(self.jailer.read_log, jail.ws)
            result = self.jailer.result(
                run_id, request, seen, jail.group, Ending.from_log(log_text)
            )
            await collect_files(result, jail.ws, request, self.settings)
            result.created_at = created
            return result
        finally:
            # Every process of the run is dead (supervise killed the cgroup): the rest is
            # cleanup, after the response; then the pool prepares a replacement.
            if not retired:
                self.background.spawn(self.retire(profile, jail))
