"""One nsjail jail, seen from the host: its arguments, its start inside its cgroup, and the
reading of its end (nsjail's log, the init's status) into a RunResult.

Both a run's jail built for it (`NsjailBackend`) and a warm jail (`NsjailWarmPool`) are
made, started and read here, so a warm jail is a cold one in every respect but its program;
neither of those modules reaches into the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import (
    BASE_ENV,
    JAIL_INIT,
    exit_status,
    host_init,
    under_init,
    visible_at,
)
from sandboxd.backends.host.reporting import classify, pids_note, to_result
from sandboxd.backends.host.supervise import Supervised
from sandboxd.backends.host.workspace import JAIL_CACHE, Workspace
from sandboxd.backends.jailside import fork_server, jail_forwarder
from sandboxd.backends.nsjail.config import jail_config
from sandboxd.backends.nsjail.settings import NsjailConfig
from sandboxd.models import MAIN_FILE, Limits, RunRequest, RunResult, RunStatus
from sandboxd.settings import UID_SPAN, Settings

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


class Jailer:
    """Builds, starts and reads jails for one daemon: `build` (once the host is prepared)
    fixes the arguments every jail shares; `run_args` adds one jail's own."""

    def __init__(
        self,
        settings: Settings,
        config: NsjailConfig,
        binary: Path,
        etc_dir: Path,
        seccomp_dir: Path,
    ) -> None:
        self.settings = settings
        self.config = config
        self.binary = binary
        self.etc_dir = etc_dir
        self.seccomp_dir = seccomp_dir
        self._static_args: list[str] = []
        #: The jail's init (pid 1; the program is its child), as the jail sees it.
        self.init_path = JAIL_INIT

    def build(self) -> None:
        """The arguments every jail shares (the host's files are in place by now)."""
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
        self._static_args = args

    def program_argv(self, request: RunRequest) -> list[str]:
        """The run's argv, as a jail built for it starts it (under the init, see
        `config_text`)."""
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

    def program(self, request: RunRequest) -> tuple[list[str], dict[str, str]]:
        """The run's argv (not under the init) and environment; an allowlist run's program
        starts under the jail's egress forwarder."""
        env = {**BASE_ENV, **request.env}
        argv = self.program_argv(request)
        if request.network.mode == "allowlist":
            env = {**BASE_ENV, **jail_forwarder.proxy_env(), **request.env}
            argv = jail_forwarder.wrap(self.config.python, argv)
        return argv, env

    def config_text(self, run_id: str, request: RunRequest) -> bytes:
        argv, env = self.program(request)
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
            *(["--bindmount", f"{ws.cache}:{JAIL_CACHE}"] if ws.cache is not None else []),
        ]

    def server_uid_count(self) -> int:
        """How many of the daemon's uids a fork server maps (all but its own and the
        download caches' owner, the range's last two)."""
        return UID_SPAN - 2

    @staticmethod
    def server_mount_points(*, extras: bool) -> list[str]:
        """The placeholders a fork server's jail has (see `fork_server.MOUNT_POINTS`)."""
        return [*fork_server.MOUNT_POINTS, *(fork_server.EXTRA_MOUNT_POINTS if extras else ())]

    def server_args(self, log_path: Path, control_fd: int, *, extras: bool) -> list[str]:
        """nsjail's arguments for a fork server's jail (see `forkserver`): the run jail's
        root, devices and /etc, the daemon's uid range mapped, capabilities kept over its own
        user namespace, no seccomp filter (each run installs its own) and no time limit; the
        mount points a run attaches its own mounts on (made read-only by the server)."""
        static = list(self._static_args)
        at = static.index("--seccomp_policy")
        del static[at : at + 2]
        return [
            "--mode",
            "o",
            "--log",
            str(log_path),
            "--keep_caps",
            "--proc_rw",
            "--time_limit",
            "0",
            "--rlimit_cpu",
            "inf",
            "--rlimit_fsize",
            "inf",
            "--pass_fd",
            str(control_fd),
            *static,
            *(a for mp in self.server_mount_points(extras=extras) for a in ("--tmpfsmount", mp)),
        ]

    def server_id_maps(self) -> bytes:
        """A fork server's uid and gid maps, as nsjail config text (its command line would
        use newuidmap; nsjail, as root, writes these itself)."""
        base = self.settings.identity.uid_base
        maps = [(0, base + UID_SPAN - 2, 1), (1, base, self.server_uid_count())]
        lines = [
            f'{kind} {{ inside_id: "{inside}" outside_id: "{outside}" count: {count} '
            "use_newidmap: false }"
            for kind in ("uidmap", "gidmap")
            for inside, outside, count in maps
        ]
        return ("\n".join(lines) + "\n").encode()

    async def spawn(
        self,
        args: list[str],
        config: bytes,
        group: cgroups.RunCgroup,
        *,
        stdin: bool,
        pass_fds: tuple[int, ...] = (),
        quiet: bool = False,
    ) -> asyncio.subprocess.Process:
        """Start nsjail with `args` and `config` inside `group`; nothing runs outside it.
        `quiet`: its stdout and stderr are not kept (a fork server's)."""
        cfg_r, cfg_w = os.pipe2(os.O_CLOEXEC)
        output = asyncio.subprocess.DEVNULL if quiet else asyncio.subprocess.PIPE
        try:
            os.set_inheritable(cfg_r, True)
            proc = await asyncio.create_subprocess_exec(
                str(self.binary),
                "--config",
                f"/dev/fd/{cfg_r}",
                *args,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                pass_fds=(cfg_r, *pass_fds),
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
            await asyncio.to_thread(_enter_and_configure, group, proc.pid, cfg_w, config)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(cfg_w)
        return proc

    @staticmethod
    async def cleanup(ws: Workspace, group: cgroups.RunCgroup | None) -> None:
        """Kill whatever is left of a jail, remove its cgroup, drop its tmpfs."""
        if group is not None:
            if not await group.terminate(group.root_pids()):
                log.error("processes of %s survived SIGKILL", ws.root.name)
            group.remove()
        await asyncio.to_thread(ws.destroy)

    @staticmethod
    def read_log(ws: Workspace) -> str:
        try:
            with open(ws.root / "nsjail.log", "rb") as fh:
                return fh.read(LOG_CAP).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def result(
        self,
        run_id: str,
        request: RunRequest,
        seen: Supervised,
        group: cgroups.RunCgroup,
        ending: Ending,
    ) -> RunResult:
        exit_code, signal_name = ending.exit_code, ending.signal
        limits = request.limits
        oom = group.oom_kills()
        status: RunStatus
        ended = classify(
            seen.killed_for,
            limits,
            exit_code=exit_code,
            signal=signal_name,
            oom=bool(oom),
            oom_kills=oom,
        )
        if ended is not None:
            status, message = ended
            if status == "failed" and exit_code in (126, 127) and (m := _init_exec_failure(seen)):
                message = f"cannot execute {m.group(1)}: {m.group(2)}"
        elif ending.exec_failure is not None:
            # The jail was built but the program could not be executed: the caller's mistake.
            path, reason = ending.exec_failure
            status, exit_code = "failed", 126 if reason == "Permission denied" else 127
            message = f"cannot execute {path}: {reason}"
        else:
            status = "error"
            message = "sandbox failed to start: " + (
                " | ".join(ending.errors[-4:]) or f"its supervisor exited with {seen.returncode}"
            )
            log.error("run %s: %s", run_id, message)
        notes = [message] if message else []
        if oom and status != "memory_limit":
            notes.append(f"memory limit of {limits.memory_mib} MiB killed {oom} processes")
        notes += pids_note(limits, group.pids_refused(), status)
        try:
            peak = group.peak_memory_bytes() / (1024 * 1024)
        except OSError:
            peak = 0.0
        code = (exit_code, signal_name)
        return to_result(run_id, "nsjail", limits, seen, (status, notes), code, peak)


@dataclass
class Ending:
    """How a jail ended, as its supervisor tells it (nsjail's log, or a forked run's first
    process): the init's status, or why the program or the jail could not start."""

    exit_code: int | None = None
    signal: str | None = None
    exec_failure: tuple[str, str] | None = None  # (path, reason): the program's execve failed
    errors: list[str] = field(default_factory=list)  # why the jail itself failed

    @classmethod
    def from_status(cls, status: int) -> Ending:
        """From the init's exit status: the program's own, or 128+N for its death by N."""
        exit_code, signal_name = exit_status(status)
        return cls(exit_code, signal_name)

    @classmethod
    def from_log(cls, log_text: str) -> Ending:
        launched = not any(marker in log_text for marker in _LAUNCH_FAILED)
        if launched and (m := _EXIT_RE.search(log_text)):
            return cls.from_status(int(m.group(1)))
        if launched and (m := _SIGNAL_RE.search(log_text)):
            return cls(signal=m.group(1))  # the init itself was killed (the cgroup's kill)
        if m := _EXECVE_RE.search(log_text):
            return cls(exec_failure=(m.group(1), m.group(2)))
        errors = [ln for ln in log_text.splitlines() if ln.startswith(("[W]", "[E]", "[F]"))]
        return cls(errors=errors)


def _enter_and_configure(group: cgroups.RunCgroup, pid: int, config_fd: int, config: bytes) -> None:
    # A cgroup v1 move waits for an RCU grace period (milliseconds): never on the loop.
    group.add_pid(pid)
    view = memoryview(config)
    while view:
        view = view[os.write(config_fd, view) :]


def _init_exec_failure(seen: Supervised) -> re.Match[str] | None:
    """The init's report that it could not execute the program (a path that does not
    exist, or is not executable), from the last line of stderr. The program could print
    the same line: then it only words its own failed run's message."""
    lines = seen.stderr.text().rstrip("\n").rsplit("\n", 1)
    return _INIT_EXEC_RE.match(lines[-1])
