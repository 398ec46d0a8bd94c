"""The fork server: one prepared interpreter, inside an nsjail jail, that forks a jail per run.

Starting nsjail and CPython for every run costs more than most runs (bench/RESULTS.md). The
fork server pays both once: nsjail builds its jail (the read-only root, the devices, /etc,
rlimits), CPython starts and loads the modules below, and from then on each run is a `fork()`
of this process that becomes a jail of its own before it runs a byte of the run's code.

The server runs no run's code and holds no secret: it is uid 0 of a user namespace of its
own whose ids map to the daemon's host uid range, with capabilities over that namespace only.
It reads the daemon's orders on a SOCK_SEQPACKET socket (fd given in argv): first the run
seccomp filter (a BPF program the daemon compiled from its one rule table), then, per run,
one message carrying descriptors: the run's socket, its stdin, stdout and stderr, and the
mounts the daemon cloned for it (`open_tree`: its workspace, /tmp, /dev/shm, maybe /cache and
the egress socket).

It keeps SPARE_FORKS children forked ahead. Each, still uid 0 here, makes fresh mount, pid,
network (loopback up), ipc and uts namespaces (owned by the server's user namespace, so the
run will have no capability over them) and forks B, pid 1 of the new pid namespace and the
run's init: B mounts that namespace's /proc, keeps only the read end of a pipe, drops every
capability, installs the seccomp filter and waits for the pipe to close. The child then waits
on the control socket, where an order reaches exactly one child, which becomes the run's A:

1. it attaches the cloned mounts over read-only placeholders and tells the daemon its pid
   (the kernel's SCM_CREDENTIALS give the daemon the host pid); the daemon moves it and B
   into the run's cgroup, every limit already set, lowers its cpu and file-size rlimits, and
   only then sends the run's spec;
2. it takes the run's uid in the server's namespace, unshares a user namespace of its own
   mapping only that uid (as 1000), and a cgroup namespace rooted at the run's cgroup;
3. it forks C, pid 2: the run;
4. when C ends, it closes B's pipe (B exits, and the kernel kills whatever is left in the
   namespace), waits for B, and reports C's status as tini would (128+N for signal N).

C closes every descriptor but its stdio, drops every capability (bounding set included),
sets no_new_privs and installs the seccomp filter, then becomes the run: a python program is
executed by this interpreter, as `warm_boot` does (the server's own modules are dropped from
`sys.modules` first); anything else is `execve`d.

This file's text is joined with `warm_boot` and `seccomp_filter` into one program (the jail
has no sandboxd to import): see `sandboxd/backends/nsjail/forkserver.py`.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# Defined by the texts the program joins before this one (see above): declared, not bound.
_warm_up: "Callable[[], None]"
_become_run: "Callable[[list[str], set[str]], None]"
install_filter: "Callable[[bytes], None]"

READY = b"\x00sandboxd-fork-ready"
#: Namespaces every run gets of its own (CLONE_NEW* flags).
CLONE_NEWUSER = 0x10000000
CLONE_NEWCGROUP = 0x02000000
#: Made by a waiter before any run (owned by the server's user namespace, so the run, whose
#: own user namespace is their child, has no capability over them): mount, pid, network,
#: ipc and uts.
PREPARED_NAMESPACES = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000
#: Where the run's uid 1000 is in the server's namespace: 1 + its offset in the daemon's range.
JAIL_UID = 1000
MAX_FDS = 16
#: Children forked ahead, each waiting for the next run's order.
SPARE_FORKS = 4
#: Where a run attaches its own mounts: tmpfs placeholders of nsjail's, made read-only here.
#: Every jail has the first three; a server for runs with a download cache or an egress
#: allowlist has all five (a root entry would be seen by every run forked from its server).
MOUNT_POINTS = ("/workspace", "/tmp", "/dev/shm")  # noqa: S108  # the jail's own, not the host's
EXTRA_MOUNT_POINTS = ("/cache", "/run/sandboxd")
EGRESS_SOCKET = "/run/sandboxd/egress.sock"


def _serve() -> None:
    import sys

    # Set by the program's first lines (see forkserver.program_text), before any import.
    startup = set(globals().get("_STARTUP", sys.modules)) - {"__main__"}
    import _socket
    import ctypes
    import fcntl
    import marshal
    import os
    import signal as _signal

    _warm_up()  # noqa: F821  # warm_boot's: the compiler set up, start-up's objects frozen
    libc = ctypes.CDLL(None, use_errno=True)
    ctl = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, int(sys.argv[1]))
    bpf = ctl.recv(1 << 20)
    os.umask(0o022)
    mount_points = sys.argv[2:]
    if EGRESS_SOCKET.rsplit("/", 1)[0] in mount_points:
        os.close(os.open(EGRESS_SOCKET, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    for path in mount_points:  # MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        _check(libc.mount(None, path.encode(), None, 32 | 4096 | 1 | 2 | 4, None), path)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)  # the kernel reaps what ends
    taken_r, taken_w = os.pipe2(os.O_CLOEXEC)
    tools = (libc, marshal, fcntl, _socket, _signal)
    ctl.send(READY)
    for _ in range(SPARE_FORKS):
        _spawn_waiter(ctl, taken_r, taken_w, bpf, startup, tools)
    while True:
        told = os.read(taken_r, 64)
        if not told or b"E" in told:
            os._exit(0)  # the daemon is gone: so are the runs (this is their pid ns's init)
        for _ in told:
            _spawn_waiter(ctl, taken_r, taken_w, bpf, startup, tools)


def _spawn_waiter(ctl, taken_r: int, taken_w: int, bpf: bytes, startup: set[str], tools) -> None:  # type: ignore[no-untyped-def]
    """Fork a child that waits for the next run's order: the fork is paid before the run."""
    import os

    try:
        pid = os.fork()
    except OSError:
        return  # the next run's launch times out, and the daemon restarts the server
    if pid != 0:
        return
    try:
        os.close(taken_r)
        libc, _socket = tools[0], tools[3]
        # Our /proc entry, from the server's /proc: the init mounts its namespace's over it.
        proc_self = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _check(libc.unshare(PREPARED_NAMESPACES), "unshare(namespaces)")
        _loopback_up(_socket, tools[2])
        # B, pid 1 of the new pid namespace, lives until this process closes `alive` (or
        # ends): then the kernel kills whatever is left in the namespace.
        alive_r, alive = os.pipe2(os.O_CLOEXEC)
        init = os.fork()
        if init == 0:
            _init(alive_r, bpf, libc)
        os.close(alive_r)
        msg, ancillary, _flags, _addr = ctl.recvmsg(8, _socket.CMSG_SPACE(MAX_FDS * 4))
        os.write(taken_w, b"T" if msg else b"E")
        if not msg:
            os._exit(0)
        os.close(taken_w)
        ctl.close()
        fds: list[int] = []
        for level, kind, data in ancillary:
            if level == tools[3].SOL_SOCKET and kind == tools[3].SCM_RIGHTS:
                fds += memoryview(data)[: len(data) - len(data) % 4].cast("i").tolist()
        _jail(fds, (init, alive), proc_self, bpf, startup, tools)
    except SystemExit:
        raise  # the run's own full exit (warm_boot's, after foreign native code)
    except BaseException:
        os._exit(1)
    os._exit(1)


def _check(rc: int, what: str) -> None:
    if rc < 0:
        import ctypes
        import os

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _jail(
    fds: list[int],
    init: tuple[int, int],
    proc_self: int,
    bpf: bytes,
    startup: set[str],
    tools: tuple,  # type: ignore[type-arg]
) -> None:
    """A: attach the run's mounts, report, take the run's cgroup and spec and uid, and fork
    the run (C); report C's status once nothing of the run is left. `init`: B's pid, and
    the pipe whose closing ends it."""
    import os

    libc, marshal, _fcntl, _socket, _signal = tools
    run = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fds[0])
    try:
        stdio, mounts = fds[1:4], fds[4:]
        run.send(b"p")  # the daemon reads our host pid from the credentials
        spec = marshal.loads(run.recv(1 << 22) or marshal.dumps(None))
        if spec is None:
            os._exit(0)  # the daemon gave the run up
        for fd, target in zip(mounts, spec["mounts"], strict=True):
            rc = libc.syscall(429, fd, b"", -100, target.encode(), 0x4)  # move_mount(F_EMPTY_PATH)
            _check(rc, f"move_mount {target}")
            os.close(fd)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
            os.close(fd)
        uid = spec["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _check(libc.prctl(4, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")  # own /proc/self again
        _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        for name, text in (
            ("uid_map", f"{JAIL_UID} {uid} 1"),
            ("setgroups", "deny"),
            ("gid_map", f"{JAIL_UID} {uid} 1"),
        ):
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_self)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        _check(libc.unshare(CLONE_NEWCGROUP), "unshare(CLONE_NEWCGROUP)")  # rooted at the run's
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        child = os.fork()
    except BaseException as exc:
        run.send(b"e" + f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
        os._exit(1)
    if child == 0:
        run.close()
        _program(spec, bpf, startup, libc, _signal)
    for fd in range(3):
        os.close(fd)
    while True:
        try:
            _pid, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os.close(init[1])  # the init ends, as tini would: the kernel kills what is left
    os.waitpid(init[0], 0)
    run.send(b"x%d" % _init_status(status))
    os._exit(0)


def _init(alive: int, bpf: bytes, libc) -> None:  # type: ignore[no-untyped-def]
    """B: the run's init, pid 1 of its pid namespace. It mounts that namespace's /proc, then
    holds nothing but `alive` (its stdin; stdout and stderr on /dev/null), can do nothing
    (no capability, the run's seccomp filter, the server's uid, which the run cannot signal
    or trace), and ends when `alive` does; with SIGCHLD ignored, the kernel reaps the orphans
    it inherits."""
    import os

    try:
        rc = libc.mount(
            b"proc", b"/proc", b"proc", 0x1 | 0x2 | 0x4 | 0x8, None
        )  # ro,nosuid,nodev,noexec
        _check(rc, "mount /proc")
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(alive, 0)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.closerange(3, 1 << 20)
        _drop_capabilities(libc)
        install_filter(bpf)  # noqa: F821  # seccomp_filter's
        while os.read(0, 1):
            pass
    except BaseException:
        os._exit(125)
    os._exit(0)


def _loopback_up(_socket, fcntl) -> None:  # type: ignore[no-untyped-def]
    """The run's own `lo`, up (a new network namespace has it down)."""
    import struct

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), 0x8913, req))[1]
        fcntl.ioctl(sock.fileno(), 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1 | 0x40))
    finally:
        sock.close()


def _init_status(status: int) -> int:
    """As an init reports its child's end: its exit code, or 128+N for signal N."""
    import os

    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _program(spec: dict, bpf: bytes, startup: set[str], libc, _signal) -> None:  # type: ignore[no-untyped-def, type-arg]
    """C: pid 2, the run. Nothing of the server's is left to it: no descriptor, no
    capability, no module it did not import; the seccomp filter is its last act as us."""
    import os
    import sys

    try:
        os.closerange(3, 1 << 20)
        _drop_capabilities(libc)
        install_filter(bpf)  # noqa: F821  # seccomp_filter's
        os.chdir("/workspace")
    except BaseException as exc:
        os.write(2, f"sandboxd: the run's jail failed: {exc}\n".encode(errors="replace"))
        os._exit(125)
    argv = spec.get("argv")
    if argv:
        for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
            _signal.signal(signum, _signal.SIG_DFL)
        try:
            os.execve(argv[0], argv, spec["env"])  # noqa: S606  # the run's own program, jailed
        except OSError as exc:  # as the init of a jail built per run reports it
            os.write(2, f"[FATAL tini (2)] exec {argv[0]} failed: {exc.strerror}\n".encode())
            os._exit(126 if isinstance(exc, PermissionError) else 127)
    for name in list(sys.modules):
        if name not in startup and name != "__main__":
            del sys.modules[name]
    del libc, _signal
    _become_run(spec["entries"], startup)  # noqa: F821  # warm_boot's


def _drop_capabilities(libc) -> None:  # type: ignore[no-untyped-def]
    """Every capability gone: bounding set, ambient, then effective, permitted, inheritable."""
    import ctypes

    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) < 0:  # PR_CAPBSET_DROP; EINVAL past the last cap
            break
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    _check(libc.syscall(126, header, data), "capset")


if __name__ == "__main__":
    _serve()
