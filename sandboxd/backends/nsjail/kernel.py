"""An interpreter context's jail under nsjail: a jail like a run's, over the sandbox's
workspace, that lives until the context ends, with the kernel as its program.

Its cgroup holds the whole context (the kernel and whatever it starts): memory and
pids are the sandbox's limits for all of it. Wall and cpu time are per execution (the
`Kernel` watches them), so nsjail's own time limit and RLIMIT_CPU are off. Its directory and
cgroup sit with the runs', so a daemon that dies leaves nothing that the next one's start does
not reap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sandboxd.backends.base import SandboxMount
from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import BASE_ENV, OVERHEAD_PIDS, under_init
from sandboxd.backends.host.kernel import KERNEL_ENV, Kernel, KernelConnection
from sandboxd.backends.host.workspace import Workspace
from sandboxd.backends.jailside import kernel_launcher
from sandboxd.backends.nsjail.config import jail_config
from sandboxd.backends.nsjail.jail import Jailer
from sandboxd.errors import BackendUnavailable, InvalidRequest, SandboxdError
from sandboxd.models import ContextSpec, Limits

log = logging.getLogger("sandboxd.nsjail.kernel")
#: Kept of what the jail prints on its own stdout/stderr (only read when it fails to start).
TAIL_BYTES = 8192
READY_TIMEOUT_S = 60.0


class NsjailKernelJail:
    """The jail of one context: its nsjail process, cgroup and tmpfs."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        group: cgroups.RunCgroup,
        ws: Workspace,
        jailer: Jailer,
    ) -> None:
        self.proc = proc
        self.group = group
        self.ws = ws
        self.jailer = jailer
        self.tail = bytearray()
        self.exited: asyncio.Future[None] = asyncio.ensure_future(self._watch())
        self._destroyed: asyncio.Future[None] | None = None

    async def _watch(self) -> None:
        async def drain(stream: asyncio.StreamReader | None) -> None:
            while stream is not None and (chunk := await stream.read(65536)):
                self.tail += chunk
                del self.tail[:-TAIL_BYTES]

        await asyncio.gather(drain(self.proc.stdout), drain(self.proc.stderr))
        await self.proc.wait()

    def oom_kills(self) -> int:
        try:
            return self.group.oom_kills()
        except OSError:
            return 0

    def cpu_time_s(self) -> float:
        try:
            return self.group.cpu_time_s()
        except OSError:
            return 0.0

    async def destroy(self) -> None:
        if self._destroyed is None:
            self._destroyed = asyncio.ensure_future(self._destroy())
        await asyncio.shield(self._destroyed)

    async def _destroy(self) -> None:
        await self.jailer.cleanup(self.ws, self.group)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.exited, 5.0)


async def start_kernel(
    jailer: Jailer,
    manager: cgroups.CgroupManager,
    ws: Workspace,
    context_id: str,
    sandbox: SandboxMount,
    limits: Limits,
    spec: ContextSpec,
    *,
    supervisor_memory_mib: int,
    max_message_bytes: int,
) -> Kernel:
    """Start the context's jail and wait until its kernel answers; on any failure nothing of
    it is left."""
    group: cgroups.RunCgroup | None = None
    conn: KernelConnection | None = None
    jail: NsjailKernelJail | None = None
    try:
        await asyncio.to_thread(ws.create, disk_mib=limits.disk_mib)
        conn = KernelConnection(ws.root / "k", uid=sandbox.uid, max_message_bytes=max_message_bytes)
        conn.bind()
        group = await asyncio.to_thread(
            manager.create,
            context_id,
            memory_bytes=(limits.memory_mib + supervisor_memory_mib) << 20,
            pids_max=limits.pids + OVERHEAD_PIDS,
        )
        args = [
            *jailer.run_args(ws, sandbox.uid, limits, egress=False),
            "--time_limit",
            "0",
            "--rlimit_cpu",
            "inf",
            "--bindmount_ro",
            f"{conn.sock_dir}:{kernel_launcher.JAIL_SOCKET_DIR}",
        ]
        cwd = "/workspace/" + spec.cwd if spec.cwd else "/workspace"
        argv = kernel_launcher.launcher_argv(jailer.config.python, conn.key, cwd)
        env = {**BASE_ENV, **KERNEL_ENV, **spec.env}
        config = jail_config(context_id, under_init(jailer.init_path, argv), env)
        proc = await jailer.spawn(args, config, group, stdin=False)
        jail = NsjailKernelJail(proc, group, ws, jailer)
        kernel = Kernel(conn, jail, limits)
        try:
            await conn.wait_ready(READY_TIMEOUT_S, lambda: not jail.exited.done())
        except TimeoutError:
            died = jail.exited.done()
            oom, refused = jail.oom_kills(), _refused(group)
            await jail.destroy()
            text = bytes(jail.tail).decode(errors="replace").strip().splitlines()
            log_text = await asyncio.to_thread(jailer.read_log, ws)
            errors = [ln for ln in log_text.splitlines() if ln.startswith(("[W]", "[E]", "[F]"))]
            detail = " | ".join((errors + text)[-4:]) or "no output"
            raise _start_failure(died, oom, refused, limits, detail) from None
        return kernel
    except BaseException:
        if conn is not None:
            conn.close()
        if jail is not None:
            await asyncio.shield(jail.destroy())
        else:
            await asyncio.shield(jailer.cleanup(ws, group))
        raise


def _refused(group: cgroups.RunCgroup) -> int:
    try:
        return group.pids_refused()
    except OSError:
        return 0


def _start_failure(
    died: bool, oom: int, refused: int, limits: Limits, detail: str
) -> SandboxdError:
    """Why a kernel did not start: the sandbox's limits (the caller's to change: 400), or
    the host (503)."""
    if oom:
        return InvalidRequest(
            f"the interpreter does not start within the sandbox's memory limit of "
            f"{limits.memory_mib} MiB: create the sandbox with more `limits.memory_mib`",
            field="limits.memory_mib",
        )
    if refused:
        return InvalidRequest(
            f"the interpreter does not start within the sandbox's limit of {limits.pids} "
            "pids: create the sandbox with more `limits.pids`",
            field="limits.pids",
        )
    if died:
        return InvalidRequest(f"the interpreter exited as it started: {detail}", field="env")
    return BackendUnavailable(
        f"the interpreter did not start: {detail} (is python3-ipykernel installed? see "
        "scripts/setup.sh)"
    )
