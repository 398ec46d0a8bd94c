"""The seccomp rules, written once, rendered as a Kafel policy (nsjail) and a Docker profile.

Default allow, with a deny list of kernel interfaces that untrusted code has no business with.
Blocked calls fail with an errno (EPERM, or what makes programs degrade gracefully) rather than
killing the process. Other ABIs are refused: nsjail's Kafel filter kills any syscall made with
a foreign architecture token (i386 `int 0x80`), and x32 numbers of every denied call are denied
too; the Docker profile lists x86_64 alone, which libseccomp enforces the same way.

A third rendering, `seccomp_bpf.render_bpf()`, compiles the same table with the host's
libseccomp into a classic BPF program, for runs forked by the daemon's fork server, which
install the filter themselves (`jailside/seccomp_filter.py`) with no nsjail in between.
libseccomp takes at most one comparison per argument in a rule: a rule whose Docker form
has more gives an equivalent `bpf_args`.

`python -m sandboxd.backends.host.seccomp [DIR]` rewrites `seccomp/default.policy` and
`seccomp/default.json`; a test keeps the checked-in files equal to what this module renders.
"""

from __future__ import annotations

import errno
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

X32_BIT = 0x40000000
# Namespace-creating clone flags: NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
# NEWNET.
CLONE_NS_FLAGS = (
    0x00000080
    | 0x00020000
    | 0x02000000
    | 0x04000000
    | 0x08000000
    | 0x10000000
    | 0x20000000
    | 0x40000000
)
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
AF_MAX = 46
SOCK_TYPE_MASK, SOCK_RAW, SOCK_PACKET = 0xF, 3, 10
NETLINK_ROUTE = 0

#: Denied outright, by group (the groups document why). x86_64 numbers, for the x32 variants.
DENIED: dict[str, dict[str, int]] = {
    "debugging other processes": {
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "pidfd_getfd": 438,
    },
    "mounts and root changes": {
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "move_mount": 429,
        "open_tree": 428,
        "mount_setattr": 442,
    },
    "namespaces": {"unshare": 272, "setns": 308},
    "kernel attack surface": {
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "lookup_dcookie": 212,
        "fanotify_init": 300,
        "syslog": 103,
        "uselib": 134,
        "iopl": 172,
        "ioperm": 173,
    },
    "kernel keyrings": {"keyctl": 250, "add_key": 248, "request_key": 249},
    "kernel modules and kexec": {
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
    },
    "host administration": {
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "acct": 163,
        "quotactl": 179,
        "sethostname": 170,
        "setdomainname": 171,
        "vhangup": 153,
    },
    "clocks": {"settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159},
    "file handles (bypass path checks)": {"open_by_handle_at": 304, "name_to_handle_at": 303},
}
#: x32-only numbers (512 and up, with the x32 bit) of ptrace, process_vm_* and kexec_load.
X32_ONLY = {"ptrace": 521, "process_vm_readv": 539, "process_vm_writev": 540, "kexec_load": 528}


@dataclass(frozen=True)
class ArgRule:
    """A syscall denied only when its arguments match `kafel` (a Kafel boolean expression)."""

    syscall: str
    params: str
    kafel: str
    errno_value: int
    docker_args: list[list[dict[str, Any]]]  # OR of ANDs, in Docker's JSON form
    why: str
    #: The same condition for libseccomp (at most one comparison per argument in an AND),
    #: when `docker_args` does not fit that; None: `docker_args` serves as it is.
    bpf_args: list[list[dict[str, Any]]] | None = None


def _eq(index: int, value: int) -> dict[str, Any]:
    return {"index": index, "value": value, "op": "SCMP_CMP_EQ"}


def _masked(index: int, mask: int, value: int) -> dict[str, Any]:
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def _not_0_nor_all_ones(index: int) -> list[list[dict[str, Any]]]:
    """`arg != 0 && arg != 0xffffffff` with one comparison per rule: a 32-bit value that is
    neither has, somewhere around the circle of its bits, a set bit followed by a clear one;
    any high half set is caught by `>= 1 << 32`."""
    pairs = [(1 << bit, 1 << ((bit + 1) % 32)) for bit in range(32)]
    return [[_masked(index, one | zero, one)] for one, zero in pairs] + [
        [{"index": index, "value": 1 << 32, "op": "SCMP_CMP_GE"}]
    ]


_ALLOWED_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
_DENIED_FAMILIES = [f for f in range(AF_MAX) if f not in _ALLOWED_FAMILIES]

ARG_RULES: list[ArgRule] = [
    ArgRule(
        "socket",
        "domain, type, protocol",
        f"domain != {AF_UNIX} && domain != {AF_INET} && domain != {AF_INET6} "
        f"&& domain != {AF_NETLINK}",
        errno.EAFNOSUPPORT,
        [[_eq(0, f)] for f in _DENIED_FAMILIES]
        + [[{"index": 0, "value": AF_MAX, "op": "SCMP_CMP_GE"}]],
        "socket families other than unix, inet, inet6 (and netlink route)",
    ),
    ArgRule(
        "socket",
        "domain, type, protocol",
        f"domain == {AF_NETLINK} && protocol != {NETLINK_ROUTE}",
        errno.EAFNOSUPPORT,
        [[_eq(0, AF_NETLINK), {"index": 2, "value": NETLINK_ROUTE, "op": "SCMP_CMP_NE"}]],
        "netlink other than NETLINK_ROUTE (which libc uses for interface lists)",
    ),
    ArgRule(
        "socket",
        "domain, type, protocol",
        f"(domain == {AF_INET} || domain == {AF_INET6}) && ((type & {SOCK_TYPE_MASK}) == "
        f"{SOCK_RAW} || (type & {SOCK_TYPE_MASK}) == {SOCK_PACKET})",
        errno.EPERM,
        [
            [_eq(0, fam), _masked(1, SOCK_TYPE_MASK, kind)]
            for fam in (AF_INET, AF_INET6)
            for kind in (SOCK_RAW, SOCK_PACKET)
        ],
        "raw and packet sockets",
    ),
    ArgRule(
        "clone",
        "flags, stack, parent_tid, child_tid, tls",
        f"(flags & {CLONE_NS_FLAGS:#x}) != 0",
        errno.EPERM,
        # libseccomp has no "masked not-equal": one rule per namespace flag bit that is set.
        [[_masked(0, bit, bit)] for bit in range(32) for bit in [1 << bit] if CLONE_NS_FLAGS & bit],
        "clone that creates namespaces",
    ),
    ArgRule(
        "personality",
        "persona",
        "persona != 0 && persona != 0xffffffff",
        errno.EPERM,
        [
            [
                {"index": 0, "value": 0, "op": "SCMP_CMP_NE"},
                {"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"},
            ]
        ],
        "personality changes (only querying and PER_LINUX)",
        bpf_args=_not_0_nor_all_ones(0),
    ),
]
KAFEL_BY_NUMBER = {"umount2"}
#: clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes libc use clone.
ENOSYS_CALLS = ["clone3"]


def denied_names() -> list[str]:
    return [name for group in DENIED.values() for name in group]


def _kafel_name(name: str, nr: int) -> str:
    """Kafel's syscall table lacks a few names; those go by number."""
    return f"SYSCALL[{nr}]" if name in KAFEL_BY_NUMBER else name


def render_kafel() -> str:
    lines = [
        "// Generated by `python -m sandboxd.backends.host.seccomp`; do not edit.",
        "// Default allow; denied calls fail with an errno. Foreign-arch syscalls are killed",
        "// by Kafel's architecture check; x32 numbers of denied calls are denied as well.",
        "POLICY sandboxd_default {",
        f"  ERRNO({errno.EPERM}) {{",
    ]
    entries: list[str] = []
    for why, group in DENIED.items():
        entries.append(f"    // {why}")
        entries += [f"    {_kafel_name(name, nr)}," for name, nr in group.items()]
    x32 = sorted(
        {nr | X32_BIT for g in DENIED.values() for nr in g.values()}
        | {nr | X32_BIT for nr in X32_ONLY.values()}
    )
    entries.append("    // the same calls through the x32 ABI")
    entries += [f"    SYSCALL[{nr:#x}]," for nr in x32]
    last = next(
        i for i in range(len(entries) - 1, -1, -1) if not entries[i].strip().startswith("//")
    )
    entries[last] = entries[last].rstrip(",")
    lines += entries
    lines.append("  },")
    for rule in ARG_RULES:
        lines.append(f"  // {rule.why}")
        lines.append(f"  ERRNO({rule.errno_value}) {{")
        lines.append(f"    {rule.syscall}({rule.params}) {{ {rule.kafel} }}")
        lines.append("  },")
    lines.append(f"  ERRNO({errno.ENOSYS}) {{ {', '.join(ENOSYS_CALLS)} }}")
    lines.append("}")
    lines.append("USE sandboxd_default DEFAULT ALLOW")
    return "\n".join(lines) + "\n"


def render_docker() -> dict[str, Any]:
    syscalls: list[dict[str, Any]] = [
        {
            "names": denied_names(),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "comment": "denied: " + "; ".join(DENIED),
        },
        {
            "names": ENOSYS_CALLS,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.ENOSYS,
            "comment": "flags in memory; ENOSYS makes libc fall back to clone",
        },
    ]
    for rule in ARG_RULES:
        for args in rule.bpf_args or rule.docker_args:  # runc: one comparison per argument
            syscalls.append(
                {
                    "names": [rule.syscall],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": rule.errno_value,
                    "args": args,
                    "comment": rule.why,
                }
            )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "defaultErrnoRet": errno.EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }


def render_docker_text() -> str:
    return json.dumps(render_docker(), indent=2) + "\n"


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "default.policy").write_text(render_kafel())
    (directory / "default.json").write_text(render_docker_text())


if __name__ == "__main__":
    write(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "seccomp"
    )
