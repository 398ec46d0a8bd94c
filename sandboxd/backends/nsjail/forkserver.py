"""The fork server, seen from the daemon: started once in an nsjail jail, asked for one jail
per run (see `sandboxd/backends/jailside/fork_server.py` for the jail's side).

A run's jail is launched in three steps, so that nothing of the run ever runs outside its
cgroup or above its limits: the server forks (the child waits); the daemon reads the child's
host pid from the kernel's credentials on the run's socket, moves it into the run's cgroup
(every limit set already) and lowers its cpu and file-size rlimits; only then does it send
the run's spec, and the child becomes the jail. Request data travels as `marshal` data the
daemon writes and the server reads; it never reaches a shell or an argv parser.

The server's jail is nsjail's as a run's is (read-only root, devices, /etc, nofile rlimit),
with three differences a fork server needs: its user namespace maps the daemon's whole uid
range (uid 0 is a host uid of its own that no run uses; uid 1+N is `uid_base`+N), it keeps
its capabilities (over that namespace only) to build the runs' namespaces, and it has no
seccomp filter (each run installs the policy itself). It runs nothing of any run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import resource
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd.backends.host import cgroups
from sandboxd.backends.host.jail_init import BASE_ENV
from sandboxd.backends.jailside import fork_server, seccomp_filter, warm_boot
from sandboxd.backends.nsjail.config import jail_config
from sandboxd.backends.nsjail.jail import Jailer
from sandboxd.errors import BackendUnavailable

log = logging.getLogger("sandboxd.nsjail.forkserver")

READY_TIMEOUT_S = 15.0
LAUNCH_TIMEOUT_S = 10.0
#: The server's own cgroup: the interpreter, and each run's child until it is moved.
SERVER_MEMORY_MIB = 256
SERVER_PIDS = 256
_UCRED = struct.Struct("iII")
#: Its cgroup's and run directory's name: kept for the daemon's life as warm jails are
#: (`sandboxd.testing` tells them apart by it).
NAME_PREFIX = "warm_forkserver_"


def program_text() -> str:
    """The server's program: warm_boot's run, the seccomp installer and the server itself,
    each file's text without its entry point, then the server's."""
    parts = []
    for module in (warm_boot, seccomp_filter, fork_server):
        text = Path(module.__file__ or "").read_text(encoding="utf-8")
        parts.append(text.split('\nif __name__ == "__main__":', 1)[0])
    # What the interpreter loaded to start, before any of these files' imports: a forked
    # python run keeps exactly these modules.
    head = 'import sys\n_STARTUP = frozenset(sys.modules) - {"__main__"}\ndel sys\n'
    return head + "\n\n".join(parts) + "\n\n_serve()\n"


@dataclass
class Launched:
    """A run's jail, forked and in its cgroup, waiting for its spec (`start`)."""

    pid: int
    sock: socket.socket
    stdout: int
    stderr: int
    stdin: int | None
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in (self.stdout, self.stderr, self.stdin):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sock.close()


class ForkServer:
    """One fork server jail: `start`, then `launch` per run, `close` at the end."""

    def __init__(
        self,
        jailer: Jailer,
        cgroup_manager: cgroups.CgroupManager,
        runs_dir: Path,
        bpf: bytes,
        *,
        extras: bool = False,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        #: A server for runs with a download cache or an egress allowlist: its jail has
        #: their mount points, which no other run's jail shows.
        self.extras = extras
        self.jailer = jailer
        self.cgroups = cgroup_manager
        self.runs_dir = runs_dir
        self.bpf = bpf
        self.uid_base = jailer.settings.identity.uid_base
        self.name = ""
        self._ctl: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._group: cgroups.RunCgroup | None = None
        self._send_lock = asyncio.Lock()
        self._on_exit = on_exit
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def server_uid(self, host_uid: int) -> int:
        """Where a run's host uid is in the server's user namespace."""
        offset = host_uid - self.uid_base
        if not 0 <= offset < self.jailer.server_uid_count():
            raise ValueError(f"uid {host_uid} is outside the daemon's range")
        return 1 + offset

    async def start(self) -> None:
        self.name = NAME_PREFIX + secrets.token_hex(6)
        root = self.runs_dir / self.name
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            await asyncio.to_thread(root.mkdir, mode=0o711)
            self._group = await asyncio.to_thread(
                self.cgroups.create,
                self.name,
                memory_bytes=SERVER_MEMORY_MIB << 20,
                pids_max=SERVER_PIDS,
            )
            fd = theirs.fileno()
            argv = [self.jailer.config.python, "-u", "-c", program_text(), str(fd)]
            argv += self.jailer.server_mount_points(extras=self.extras)
            config = jail_config(self.name, argv, BASE_ENV) + self.jailer.server_id_maps()
            args = self.jailer.server_args(root / "nsjail.log", fd, extras=self.extras)
            self._proc = await self.jailer.spawn(
                args, config, self._group, stdin=False, pass_fds=(fd,), quiet=True
            )
            theirs.close()
            ours.setblocking(False)
            self._ctl = ours
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_sendall(ours, self.bpf)
                ready = await asyncio.wait_for(loop.sock_recv(ours, 64), READY_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                ready = repr(exc).encode()
            if ready != fork_server.READY:
                raise BackendUnavailable(
                    f"the fork server did not start ({ready!r}): "
                    + (await asyncio.to_thread(_tail, root / "nsjail.log"))
                )
            self._watch = asyncio.create_task(self._watch_exit())
        except BaseException:
            theirs.close()
            await asyncio.shield(self.close())
            raise

    async def _watch_exit(self) -> None:
        assert self._proc is not None  # noqa: S101  # an invariant, for mypy: started
        await self._proc.wait()
        if not self._closing and self._on_exit is not None:
            log.warning("fork server %s ended (nsjail status %s)", self.name, self._proc.returncode)
            self._on_exit()

    async def close(self) -> None:
        """End the server (and with it, as their pid namespace's init, any run it forked)."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._group is not None:
            await self._group.terminate(self._group.root_pids())
            self._group.remove()
            self._group = None
        if self._proc is not None:
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
            await self._proc.wait()
        if self.name:
            await asyncio.to_thread(_remove_dir, self.runs_dir / self.name)

    async def launch(
        self, group: cgroups.RunCgroup, mounts: list[int], *, stdin: bool, cpu_s: int, fsize: int
    ) -> Launched:
        """Fork a run's jail into `group` with the detached `mounts` (fds, closed here).

        The jail waits for `Launched`'s spec; raises BackendUnavailable when the server
        cannot fork (the caller builds a jail for the run instead)."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        in_r, in_w = os.pipe2(os.O_CLOEXEC) if stdin else (os.open(os.devnull, os.O_RDONLY), None)
        launched = Launched(0, ours, out_r, err_r, in_w)
        try:
            try:
                passed = [theirs.fileno(), in_r, out_w, err_w, *mounts]
                await self._send(passed)
            finally:
                theirs.close()
                for fd in (in_r, out_w, err_w, *mounts):
                    os.close(fd)
            launched.pid = await asyncio.wait_for(_read_pid(loop, ours), LAUNCH_TIMEOUT_S)
            await asyncio.to_thread(_place, group, launched.pid, cpu_s, fsize)
        except BaseException:
            launched.close()
            raise
        return launched

    async def _send(self, fds: list[int]) -> None:
        ctl = self._ctl
        if ctl is None or not self.alive:
            raise BackendUnavailable("the fork server is not running")
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        async with self._send_lock:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    ctl.sendmsg([b"f"], ancillary)
                    return
                except BlockingIOError:
                    await _ready(loop, ctl, writable=True)
                except OSError as exc:
                    raise BackendUnavailable(f"the fork server is gone: {exc}") from exc


class ForkServers:
    """A backend's fork servers: one for most runs, one (`extras`) for runs with a download
    cache or an egress allowlist. One that fails is restarted in the background; meanwhile
    its runs get jails built by nsjail."""

    def __init__(
        self,
        jailer: Jailer,
        cgroup_manager: cgroups.CgroupManager,
        runs_dir: Path,
        bpf: bytes,
    ) -> None:
        self._args = (jailer, cgroup_manager, runs_dir, bpf)
        #: With a `rootfs` (an image's userland, read-only, owned by the host's root) a jail
        #: cannot add /cache and /run/sandboxd: those runs keep jails built by nsjail.
        self._kinds = (False, True) if jailer.config.rootfs is None else (False,)
        self._servers: dict[bool, ForkServer] = {}
        self._restarts: dict[bool, asyncio.Task[None]] = {}
        self._closed = False

    def _make(self, extras: bool) -> ForkServer:
        return ForkServer(*self._args, extras=extras, on_exit=lambda: self.restart(extras=extras))

    async def start(self) -> None:
        """Start both; raises BackendUnavailable if either cannot start."""
        for extras in self._kinds:
            server = self._make(extras)
            await server.start()
            self._servers[extras] = server

    def get(self, *, extras: bool) -> ForkServer | None:
        """The server for a run, or None (one found dead is restarted meanwhile)."""
        server = self._servers.get(extras)
        if server is not None and server.alive:
            return server
        if extras in self._kinds:
            self.restart(extras=extras)
        return None

    def restart(self, *, extras: bool) -> None:
        if self._closed:
            return
        task = self._restarts.get(extras)
        if task is None or task.done():
            self._restarts[extras] = asyncio.create_task(self._restart(extras))

    async def _restart(self, extras: bool) -> None:
        old = self._servers.pop(extras, None)
        if old is not None:
            log.warning("a fork server ended; starting another")
            await old.close()
        server = self._make(extras)
        try:
            await server.start()
        except (BackendUnavailable, OSError) as exc:
            log.error("a fork server did not start again: %s; nsjail builds its runs' jails", exc)
            return
        self._servers[extras] = server

    async def close(self) -> None:
        self._closed = True
        for task in self._restarts.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._servers.values():
            await server.close()
        self._servers.clear()


async def _read_pid(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int:
    """The host pid of the jail's first process, from the credentials on its first message."""
    msg, ancillary = await recvmsg(loop, sock, socket.CMSG_SPACE(_UCRED.size))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and msg == b"p":
            pid: int = _UCRED.unpack(data[: _UCRED.size])[0]
            return pid
    raise BackendUnavailable(f"the fork server did not fork a jail ({msg[:200]!r})")


async def recvmsg(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, ancillary_size: int = 0
) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """One message (b"" at EOF) and its ancillary data, from a non-blocking socket."""
    while True:
        try:
            msg, ancillary, _flags, _addr = sock.recvmsg(1 << 16, ancillary_size)
            return msg, ancillary
        except BlockingIOError:
            await _ready(loop, sock, writable=False)


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, writable: bool) -> None:
    """Until `sock` can be written (or read) without blocking."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():  # the loop may call it again before we stop watching
            ready.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer)
        if writable
        else (
            loop.add_reader,
            loop.remove_reader,
        )
    )
    add(sock, wake)
    try:
        await ready
    finally:
        remove(sock)


def _place(group: cgroups.RunCgroup, pid: int, cpu_s: int, fsize: int) -> None:
    """The jail into its cgroup, its first process's rlimits lowered (in a thread: a v1
    move waits for RCU): the first process, and its child, the run's init."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        children = [int(child) for child in fh.read().split()]
    for member in (pid, *children):
        group.add_pid(member)
    resource.prlimit(pid, resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (fsize, fsize))


def start_message(spec: dict[str, object]) -> bytes:
    return marshal.dumps(spec)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1000:]
    except OSError:
        return ""


def _remove_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
