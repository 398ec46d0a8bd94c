"""The run policy as a BPF program: compiled by the host's libseccomp, loaded by the real kernel.

Each check runs a child interpreter that takes the jailside installer's text (as the fork
server carries it), installs the rendered filter and makes raw syscalls. The same probes run
in a child without the filter too, so a probe whose errno the kernel alone would give proves
nothing and fails here. Every call is made with arguments the kernel refuses on its own (bad
pointers, bad flags, bad descriptors), so a probe that got past a broken filter does no harm,
even as root. Unit tier: no root needed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandboxd.backends.host import seccomp, seccomp_bpf
from sandboxd.errors import BackendUnavailable

INSTALLER = (
    Path(__file__).resolve().parents[2] / "sandboxd/backends/jailside/seccomp_filter.py"
).read_text()
BAD = 1  # an address nothing is mapped at
X32 = seccomp.X32_BIT
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
BASICS = ("open+write", "fork", "posix_spawn", "thread")
RAW_SOCKETS = {"socket AF_INET SOCK_RAW", "socket AF_INET6 SOCK_RAW|CLOEXEC"}

#: A harmless call of every denied syscall: arguments the kernel refuses by itself.
DENIED_PROBES: dict[str, list[int]] = {
    "ptrace": [0x7FFFFFFF, 0, 0, 0],  # no request, pid 0: ESRCH
    "process_vm_readv": [0, 0, 0, 0, 0, 1],  # flags must be 0: EINVAL
    "process_vm_writev": [0, 0, 0, 0, 0, 1],
    "kcmp": [-1, -1, 0, 0, 0],
    "pidfd_getfd": [-1, 0, 0],
    "mount": [BAD, BAD, BAD, 0, 0],  # EFAULT, before any permission check
    "umount2": [BAD, 0xFFFFFFFF],
    "pivot_root": [BAD, BAD],
    "chroot": [BAD],
    "fsopen": [BAD, 0],
    "fsconfig": [-1, 0, 0, 0, 0],
    "fsmount": [-1, 0, 0],
    "fspick": [-1, BAD, 0],
    "move_mount": [-1, BAD, -1, BAD, 0],
    "open_tree": [-1, BAD, 0],
    "mount_setattr": [-1, BAD, 0, 0, 0],
    "unshare": [0],  # succeeds without the filter (no flags: nothing to do)
    "setns": [-1, 0],
    "bpf": [-1, 0, 0],
    "perf_event_open": [0, 0, -1, -1, 0],
    "userfaultfd": [0xFFFFFFFF],
    "io_uring_setup": [0, 0],
    "io_uring_enter": [-1, 0, 0, 0, 0, 0],
    "io_uring_register": [-1, 0, 0, 0],
    "lookup_dcookie": [0, 0, 0],
    "fanotify_init": [0xFFFFFFFF, 0],
    "syslog": [-1, 0, 0],
    "uselib": [BAD],
    "iopl": [4],
    "ioperm": [0xFFFFFFFF, 1, 1],
    "keyctl": [-1, 0, 0, 0, 0],
    "add_key": [BAD, BAD, 0, 0, 0],
    "request_key": [BAD, BAD, 0, 0],
    "init_module": [BAD, 0, BAD],
    "finit_module": [-1, 0, 0],
    "delete_module": [BAD, 0],
    "kexec_load": [0, 0, 0, 0xFFFFFFFF],
    "kexec_file_load": [-1, -1, 0, 0, 0xFFFFFFFF],
    "swapon": [BAD, 0],
    "swapoff": [BAD],
    "reboot": [0, 0, 0, 0],  # wrong magic numbers: EINVAL
    "acct": [BAD],
    "quotactl": [0, BAD, 0, 0],
    "sethostname": [BAD, 5],
    "setdomainname": [BAD, 5],
    "vhangup": [],  # the children have no controlling terminal (own session)
    "settimeofday": [BAD, 0],
    "clock_settime": [-1234, 0],
    "clock_adjtime": [-1234, BAD],
    "adjtimex": [BAD],
    "open_by_handle_at": [-1, BAD, 0],
    "name_to_handle_at": [-1, BAD, BAD, BAD, 0],
}
#: Probes whose errno without the filter is not EPERM even without root.
MUST_DIFFER = ("mount", "unshare", "ptrace", "bpf", "keyctl", "setns", "umount2")

#: label -> (syscall name, args, what the filter must make of it: an errno, or 0 for success)
ARG_PROBES: dict[str, tuple[str, list[int], int]] = {
    "clone3": ("clone3", [0, 0], errno.ENOSYS),
    "socket AF_PACKET": ("socket", [17, 3, 0], errno.EAFNOSUPPORT),
    "socket AF_PACKET, high bits": ("socket", [(1 << 32) | 17, 3, 0], errno.EAFNOSUPPORT),
    "socket AF_VSOCK": ("socket", [40, 1, 0], errno.EAFNOSUPPORT),
    "socket NETLINK_AUDIT": ("socket", [16, 2, 9], errno.EAFNOSUPPORT),
    "socket NETLINK_ROUTE": ("socket", [16, 2, 0], 0),
    "socket AF_INET SOCK_RAW": ("socket", [2, 3, 1], errno.EPERM),
    "socket AF_INET6 SOCK_RAW|CLOEXEC": ("socket", [10, 3 | 0o2000000, 58], errno.EPERM),
    "socket AF_INET SOCK_STREAM": ("socket", [2, 1, 0], 0),
    "socket AF_UNIX": ("socket", [1, 1, 0], 0),
    "clone CLONE_NEWUSER": ("clone", [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0], errno.EPERM),
    "personality PER_LINUX32": ("personality", [0x0008], errno.EPERM),
    "personality high bits": ("personality", [(1 << 32) | 0x0008], errno.EPERM),
    "personality ADDR_NO_RANDOMIZE": ("personality", [0x0040000], errno.EPERM),
    "personality query": ("personality", [0xFFFFFFFF], 0),
    "personality PER_LINUX": ("personality", [0], 0),
}

CHILD = r"""
import ctypes, json, os, sys
request = json.loads(sys.stdin.read())
namespace = {}
exec(compile(request["installer"], "seccomp_filter.py", "exec"), namespace)
if request["bpf"] is not None:
    namespace["install_filter"](bytes.fromhex(request["bpf"]))
libc = ctypes.CDLL(None, use_errno=True)
results = {}
for label, number, args in request["probes"]:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if result == 0 and label.startswith("clone"):
        os._exit(0)  # the clone's child
    if result >= 0 and label.startswith(("clone", "socket")):
        os.waitpid(result, 0) if label.startswith("clone") else os.close(result)
    results[label] = ctypes.get_errno() if result == -1 else 0
with open("/dev/null", "w") as sink:  # and the basics still work
    results["open+write"] = 0 if sink.write("x") == 1 else -1
pid = os.fork()
if pid == 0:
    os._exit(7)
results["fork"] = 0 if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else -1
# glibc tries clone3 first for threads and posix_spawn; its ENOSYS sends them to clone
spawned = os.posix_spawn("/bin/true", ["true"], {})
results["posix_spawn"] = os.waitstatus_to_exitcode(os.waitpid(spawned, 0)[1])
import threading
ran = []
thread = threading.Thread(target=ran.append, args=[1])
thread.start()
thread.join()
results["thread"] = 0 if ran == [1] else -1
json.dump(results, sys.stdout)
"""

#: Raw x86 code: `mov eax, 20 (i386 getpid); int 0x80; ret`, run through ctypes.
INT80 = r"""
import ctypes, mmap
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
ctypes.CFUNCTYPE(ctypes.c_int)(address)()
"""


@pytest.fixture(scope="module")
def bpf() -> bytes:
    return seccomp_bpf.render_bpf()


@pytest.fixture(scope="module")
def numbers() -> dict[str, int]:
    lib = seccomp_bpf.load_libseccomp()
    names = {*DENIED_PROBES, *(name for name, _, _ in ARG_PROBES.values())}
    return {name: seccomp_bpf.syscall_number(lib, name) for name in names}


def run_child(bpf: bytes | None, probes: list[tuple[str, int, list[int]]]) -> dict[str, int]:
    request = {"installer": INSTALLER, "bpf": bpf.hex() if bpf else None, "probes": probes}
    done = subprocess.run(
        [sys.executable, "-I", "-c", CHILD],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, int] = json.loads(done.stdout)
    return results


def run_killed(bpf: bytes | None, code: str) -> int:
    """The exit status of a child running `code` (under the filter, if one is given)."""
    prelude = f"exec({INSTALLER!r})\ninstall_filter(bytes.fromhex({bpf.hex()!r}))\n" if bpf else ""
    done = subprocess.run(
        [sys.executable, "-I", "-c", prelude + code],
        capture_output=True,
        timeout=30,
        start_new_session=True,
        check=False,
    )
    return done.returncode


def test_every_denied_call_fails_with_eperm_from_the_filter(
    bpf: bytes, numbers: dict[str, int]
) -> None:
    assert set(DENIED_PROBES) == set(seccomp.denied_names()), "a denied call without a probe"
    probes = [(name, numbers[name], args) for name, args in DENIED_PROBES.items()]
    filtered = run_child(bpf, probes)
    assert {name: filtered[name] for name in DENIED_PROBES} == dict.fromkeys(
        DENIED_PROBES, errno.EPERM
    )
    assert [filtered[basic] for basic in BASICS] == [0] * len(BASICS)
    bare = run_child(None, probes)
    # Without root the kernel refuses a few of these with EPERM itself; as root, none.
    proving = DENIED_PROBES if os.geteuid() == 0 else MUST_DIFFER
    assert [name for name in proving if bare[name] == errno.EPERM] == []


def test_argument_rules_clone3_and_the_allowed_basics(bpf: bytes, numbers: dict[str, int]) -> None:
    probes = [(label, numbers[name], args) for label, (name, args, _) in ARG_PROBES.items()]
    filtered = run_child(bpf, probes)
    expected = {label: outcome for label, (_, _, outcome) in ARG_PROBES.items()}
    assert {label: filtered[label] for label in ARG_PROBES} == expected
    assert [filtered[basic] for basic in BASICS] == [0] * len(BASICS)
    bare = run_child(None, probes)
    # Without the filter the kernel answers these with success or another errno (clone3:
    # EINVAL). It may agree only where it refuses by itself: raw sockets without root, and a
    # family it was built without.
    same = {label for label, outcome in expected.items() if outcome and bare[label] == outcome}
    assert same <= {"socket AF_VSOCK"} | (set() if os.geteuid() == 0 else RAW_SOCKETS), same


def test_x32_numbers_are_killed_never_allowed(bpf: bytes) -> None:
    """Any x32 number: those of denied calls (mount, x32's own ptrace) and of allowed ones
    (getpid). Without the filter they fail (a kernel without x32) or run, harmlessly."""
    call = "import ctypes\nctypes.CDLL(None).syscall(*(ctypes.c_long(a) for a in {}))\n"
    for number in (165 | X32, seccomp.X32_ONLY["ptrace"] | X32, 39 | X32):
        args = [number, BAD, BAD, BAD, BAD, BAD]
        assert run_killed(bpf, call.format(args)) == -signal.SIGSYS
        assert run_killed(None, call.format(args)) == 0


def test_a_foreign_architecture_is_killed(bpf: bytes) -> None:
    assert run_killed(bpf, INT80) == -signal.SIGSYS
    assert run_killed(None, INT80) != -signal.SIGSYS


def test_every_name_of_the_table_is_in_the_filter() -> None:
    """Read from libseccomp's own rendering of the filter, so that a name added to the table
    cannot be missed by the BPF rendering."""
    pfc = seccomp_bpf.render_pfc()
    filtered = {line.split('"')[1] for line in pfc.splitlines() if "filter for syscall" in line}
    table = {
        *seccomp.denied_names(),
        *seccomp.ENOSYS_CALLS,
        *(r.syscall for r in seccomp.ARG_RULES),
    }
    assert filtered == table


def test_libseccomp_numbers_match_the_table() -> None:
    """The Kafel policy derives its x32 numbers from the table's x86_64 numbers."""
    lib = seccomp_bpf.load_libseccomp()
    table = {name: nr for group in seccomp.DENIED.values() for name, nr in group.items()}
    assert {name: seccomp_bpf.syscall_number(lib, name) for name in table} == table


def test_the_program_is_whole_instructions_within_the_kernel_limit(bpf: bytes) -> None:
    assert len(bpf) % 8 == 0
    assert 0 < len(bpf) // 8 <= 4096
    assert seccomp_bpf.render_bpf() == bpf  # deterministic


def test_an_unknown_syscall_name_fails_loudly() -> None:
    lib = seccomp_bpf.load_libseccomp()
    with pytest.raises(ValueError, match="no x86_64 syscall 'no_such_call'"):
        seccomp_bpf.syscall_number(lib, "no_such_call")


def test_a_missing_libseccomp_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libseccomp-absent.so.9")
    with pytest.raises(BackendUnavailable, match="libseccomp"):
        seccomp_bpf.render_bpf()


def test_the_installer_refuses_a_partial_program() -> None:
    namespace: dict[str, object] = {}
    exec(compile(INSTALLER, "seccomp_filter.py", "exec"), namespace)  # noqa: S102
    install = namespace["install_filter"]
    assert callable(install)
    for program in (b"", b"\x00" * 12):
        with pytest.raises(ValueError, match="instructions"):
            install(program)
