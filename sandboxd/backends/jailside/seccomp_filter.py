"""Installs a seccomp filter, a classic BPF program, on the calling process: what nsjail does
for its jails, for the runs that the fork server forks and that have no nsjail in between.

The program comes from the daemon (`host.seccomp_bpf.render_bpf()`: an array of
`struct sock_filter`, 8 bytes each). `no_new_privs` is set first: the kernel demands it (or
CAP_SYS_ADMIN) for an unprivileged filter, and it keeps a setuid program from shedding the
filter's intent. The filter binds the calling thread and everything it starts afterwards, and
cannot be removed; it is meant for a freshly forked, single-threaded child, before it execs.

Like the other jailside programs, this file's text stands alone (standard library only), so
that the fork server can carry it into a jail that has no sandboxd to import.
"""

import ctypes
import os

PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317  # x86_64
SECCOMP_SET_MODE_FILTER = 1
SOCK_FILTER_SIZE = 8
BPF_MAXINSNS = 4096


class SockFprog(ctypes.Structure):
    """`struct sock_fprog`: the instruction count and a pointer to the instructions."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(bpf: bytes) -> None:
    """Set no_new_privs, then load `bpf` as this process's seccomp filter; OSError (with
    the kernel's errno) if either step fails, ValueError if `bpf` is not a whole program."""
    count, rest = divmod(len(bpf), SOCK_FILTER_SIZE)
    if rest or not 0 < count <= BPF_MAXINSNS:
        raise ValueError(f"a BPF program of {len(bpf)} bytes is not 1-{BPF_MAXINSNS} instructions")
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero):
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
    instructions = ctypes.create_string_buffer(bpf, len(bpf))
    program = SockFprog(count, ctypes.cast(instructions, ctypes.c_void_p))
    result = libc.syscall(
        ctypes.c_long(SYS_SECCOMP),
        ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
        zero,
        ctypes.byref(program),
    )
    if result:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(code)}")
