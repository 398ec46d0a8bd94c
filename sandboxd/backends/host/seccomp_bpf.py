"""The run seccomp policy as a classic BPF program, compiled by the host's libseccomp.

Runs forked by the fork server install their filter themselves (`jailside/seccomp_filter.py`),
so they need the policy that nsjail compiles from the Kafel text as raw instructions. The rules
come from `seccomp`'s table, the same one the Kafel policy and the Docker profile are rendered
from: default ALLOW; the denied calls fail with EPERM, `ENOSYS_CALLS` with ENOSYS; each
`ArgRule` (its `bpf_args`, else its Docker form) with its own errno. The filter is for x86_64
alone: a call made through another architecture (i386 `int 0x80`) kills the process, and so
does any x32-ABI number (bit 30 set), which libseccomp refuses on an x86_64-only filter, so
x32 is stricter here than in the Kafel policy, which denies only the x32 numbers of the
denied calls.

libseccomp is reached through ctypes (`libseccomp.so.2`, in Debian by default), so the daemon
gains no Python dependency; it is compiled once, at start-up (a few milliseconds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandboxd.backends.host import seccomp
from sandboxd.errors import BackendUnavailable

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_ARCH_X86_64 = 0xC000003E  # AUDIT_ARCH_X86_64
#: libseccomp's comparison operators, by the names the Docker form uses.
SCMP_CMP = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


def scmp_act_errno(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """`struct scmp_arg_cmp`: one comparison of one syscall argument."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def load_libseccomp() -> ctypes.CDLL:
    """The host's libseccomp, its functions typed; BackendUnavailable if it is missing."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.restype = None
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        lib.seccomp_rule_add_exact_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        ]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_export_pfc.argtypes = [ctypes.c_void_p, ctypes.c_int]
    except (OSError, AttributeError) as exc:
        raise BackendUnavailable(
            f"libseccomp ({name}) cannot be loaded ({exc}): install Debian's libseccomp2"
        ) from None
    if lib.seccomp_arch_native() != SCMP_ARCH_X86_64:
        raise BackendUnavailable("the seccomp policy is written for x86_64 hosts only")
    return lib


def syscall_number(lib: ctypes.CDLL, name: str) -> int:
    """`name`'s x86_64 number, as libseccomp knows it; ValueError for a name it does not."""
    number = int(lib.seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, name.encode()))
    if number < 0:
        raise ValueError(f"libseccomp knows no x86_64 syscall {name!r} (seccomp.py's table)")
    return number


def _comparisons(args: list[dict[str, Any]]) -> ctypes.Array[ArgCmp]:
    """One AND of a rule in Docker's JSON form, as libseccomp's comparison array."""
    indexes = [arg["index"] for arg in args]
    if len(set(indexes)) != len(indexes):
        raise ValueError(f"libseccomp takes one comparison per argument in a rule: {args}")
    return (ArgCmp * len(args))(
        *(
            ArgCmp(arg["index"], SCMP_CMP[arg["op"]], arg["value"], arg.get("valueTwo", 0))
            for arg in args
        )
    )


def _rules() -> Iterator[tuple[int, str, list[dict[str, Any]]]]:
    """(action, syscall name, AND of comparisons) for every rule of the table."""
    for name in seccomp.denied_names():
        yield scmp_act_errno(errno.EPERM), name, []
    for name in seccomp.ENOSYS_CALLS:
        yield scmp_act_errno(errno.ENOSYS), name, []
    for rule in seccomp.ARG_RULES:
        for args in rule.bpf_args if rule.bpf_args is not None else rule.docker_args:
            yield scmp_act_errno(rule.errno_value), rule.syscall, args


@contextmanager
def _policy(lib: ctypes.CDLL) -> Iterator[int]:
    """A libseccomp filter context holding the whole policy, released afterwards."""
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise BackendUnavailable("libseccomp could not start a filter (seccomp_init)")
    try:
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "attr")
        for action, name, args in _rules():
            comparisons = _comparisons(args)
            result = lib.seccomp_rule_add_exact_array(
                ctx, action, syscall_number(lib, name), len(args), comparisons
            )
            _check(result, f"a rule for {name} {args}")
        yield ctx
    finally:
        lib.seccomp_release(ctx)


def _check(result: int, what: str) -> None:
    if result < 0:
        raise ValueError(f"libseccomp refused {what}: {os.strerror(-result)}")


def _export(lib: ctypes.CDLL, export: str) -> bytes:
    with _policy(lib) as ctx:
        fd = os.memfd_create("sandboxd-seccomp", os.MFD_CLOEXEC)
        try:
            result = getattr(lib, export)(ctx, fd)
            if result < 0:
                raise BackendUnavailable(f"libseccomp {export} failed: {os.strerror(-result)}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)


def render_bpf() -> bytes:
    """The policy as a BPF program: `struct sock_filter` instructions, 8 bytes each."""
    program = _export(load_libseccomp(), "seccomp_export_bpf")
    if not program or len(program) % SOCK_FILTER_SIZE:
        raise BackendUnavailable(f"libseccomp exported a {len(program)}-byte BPF program")
    return program


def render_pfc() -> str:
    """The same filter as libseccomp's pseudo filter code: readable, for tests and reviews."""
    return _export(load_libseccomp(), "seccomp_export_pfc").decode()
