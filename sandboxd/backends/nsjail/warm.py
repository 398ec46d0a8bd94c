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
import functools
import logging
import math
import os
import resource
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxd.backends.base import RunControl, SandboxMount
from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import OVERHEAD_PIDS, under_init
from sandboxd.backends.host.pool import TICK_S, WarmPool
from sandboxd.backends.host.supervise import supervise
from sandboxd.backends.host.workspace import Workspace, collect_files, write_request_files
from sandboxd.backends.jailside import warm_boot, warm_exec
from sandboxd.backends.nsjail.config import BASE_ENV, jail_config
from sandboxd.errors import Overloaded
from sandboxd.models import Limits, PoolStats, RunRequest, RunResult

if TYPE_CHECKING:
    from sandboxd.backends.nsjail.backend import NsjailBackend

log = logging.getLogger("sandboxd.nsjail.warm")

READY_TIMEOUT_S = 15.0
NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup")
#: Variables the interpreter reads while it starts: a run that sets one gets an exec jail.
STARTUP_ENV_PREFIXES = ("PYTHON", "LANG", "LC_")
BOOT_SOURCE = Path(warm_boot.__file__).read_text(encoding="utf-8")
EXEC_SOURCE = Path(warm_exec.__file__).read_text(encoding="utf-8")
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


def waiter(profile: str, python: str) -> tuple[list[str], bytes]:
    """The argv of the waiter a warm jail or container of `profile` starts (`python` names
    the interpreter), and what it writes on stdout once ready."""
    if profile == "python":
        return [python, "-u", "-c", BOOT_SOURCE], warm_boot.READY
    return [python, "-I", "-S", "-c", EXEC_SOURCE], warm_exec.READY


def waiter_profile(request: RunRequest) -> str:
    """`python` when a started interpreter can become the run (a python program without
    start-up variables), else `exec` (the waiter execs the run's own program)."""
    if request.language != "python" or request.command is not None:
        return "exec"
    if any(key.startswith(STARTUP_ENV_PREFIXES) for key in request.env):
        return "exec"
    return "python"


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


class NsjailWarmPool:
    """The nsjail backend's warm pools (one per profile) and the handover of a warm jail."""

    def __init__(self, backend: NsjailBackend) -> None:
        self.backend = backend
        settings = backend.config.pool
        self.pools: dict[str, WarmPool[WarmJail]] = {
            profile: WarmPool(
                f"nsjail/{profile}",
                settings,
                functools.partial(self._prepare, profile),
                self._discard,
            )
            for profile in PROFILES
        }
        #: Whether a handover may raise a hard rlimit; if not, jails start at the maximum.
        self.can_raise = bool(effective_capabilities() >> CAP_SYS_RESOURCE & 1)
        if not self.can_raise:
            log.info(
                "the daemon lacks CAP_SYS_RESOURCE: warm jails start with cpu and file-size "
                "rlimits at max_limits and each handover lowers them to the run's"
            )

    async def start(self) -> None:
        for pool in self.pools.values():
            await pool.start()

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()

    def stats(self) -> dict[str, PoolStats]:
        return {name: pool.stats() for name, pool in self.pools.items()}

    def take(self, profile: str) -> WarmJail | None:
        return self.pools[profile].take()

    def _warm_limits(self) -> Limits:
        """The jail's limits until a run sets its own: the defaults (most runs keep them, and
        then nothing changes at handover), with nsjail's wall-time backstop stretched to
        cover the longest wait in the pool plus the longest run."""
        wait = self.backend.config.pool.max_age_s + 2 * TICK_S
        most = self.backend.settings.max_limits
        wall = most.wall_time_s + wait
        if self.can_raise:
            return Limits(wall_time_s=wall)
        return Limits(
            wall_time_s=wall, cpu_time_s=most.cpu_time_s, file_size_mib=most.file_size_mib
        )

    async def _prepare(self, profile: str) -> WarmJail:
        b = self.backend
        slot = b.warm_slots.try_take()
        if slot is None:
            raise Overloaded("every warm slot is in use")
        jail_id = "warm_" + secrets.token_hex(8)
        uid = b.settings.identity.uid_base + slot
        ws = Workspace(b.runs_dir / jail_id, uid=uid, gid=uid)
        group: cgroups.RunCgroup | None = None
        proc: asyncio.subprocess.Process | None = None
        try:
            limits = self._warm_limits()
            await asyncio.to_thread(ws.create, disk_mib=limits.disk_mib)
            assert b.cgroups is not None  # noqa: S101  # an invariant, for mypy: start() set it
            group = await asyncio.to_thread(
                b.cgroups.create,
                jail_id,
                memory_bytes=(limits.memory_mib + b.config.supervisor_memory_mib) << 20,
                pids_max=limits.pids + OVERHEAD_PIDS,
            )
            argv, expected = waiter(profile, b.config.python)
            config = jail_config(jail_id, under_init(b.init_path, argv), BASE_ENV)
            args = b.run_args(ws, uid, limits, egress=False)
            proc = await b.spawn(args, config, group, stdin=True)
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
            await self.backend.cleanup(ws, group)
            if proc is not None:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                await proc.wait()
        finally:
            self.backend.warm_slots.release(slot)

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
            memory = (new.memory_mib + self.backend.config.supervisor_memory_mib) << 20
            jail.group.set_limits(memory_bytes=memory, pids_max=new.pids + OVERHEAD_PIDS)
        if new.cpu_time_s != old.cpu_time_s:
            cpu = math.ceil(new.cpu_time_s) + 1
            resource.prlimit(jail.jail_pid, resource.RLIMIT_CPU, (cpu, cpu))
        if new.file_size_mib != old.file_size_mib:
            fsize = new.file_size_mib << 20
            resource.prlimit(jail.jail_pid, resource.RLIMIT_FSIZE, (fsize, fsize))
        jail.group.start_accounting()

    @staticmethod
    def handover_message(request: RunRequest) -> bytes:
        """The run's environment, NUL-separated (names are checked, values NUL-free)."""
        env = {**BASE_ENV, **request.env}
        body = "\0".join(f"{k}={v}" for k, v in env.items()).encode("utf-8", "surrogateescape")
        return b"%d\n" % len(body) + body

    def exec_handover(self, request: RunRequest) -> bytes:
        """An exec jail's handover: the environment and argv a cold jail would get."""
        env = [f"{k}={v}" for k, v in {**BASE_ENV, **request.env}.items()]
        return warm_exec.pack(env) + warm_exec.pack(self.backend.program_argv(request))

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
        b = self.backend
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
                await asyncio.shield(self._retire(profile, jail))
                return None
            if profile == "python":
                stdin = self.handover_message(request)
            else:
                stdin = self.exec_handover(request)
            if request.stdin is not None:
                stdin += request.stdin.encode()
            seen = await supervise(jail.proc, jail.group, request.limits, stdin, control)
            log_text = await asyncio.to_thread(b.read_log, jail.ws)
            result = b.result(run_id, request, seen, jail.group, log_text)
            await collect_files(result, jail.ws, request, b.settings)
            result.created_at = created
            return result
        finally:
            # Every process of the run is dead (supervise killed the cgroup): the rest is
            # cleanup, after the response; then the pool prepares a replacement.
            if not retired:
                b.background.spawn(self._retire(profile, jail))

    async def _retire(self, profile: str, jail: WarmJail) -> None:
        try:
            await self._discard(jail)
        finally:
            self.pools[profile].replenish()
