"""Thin wrappers over Linux syscalls that the standard library lacks (mount, umount2)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount_tmpfs(target: Path, *, size_bytes: int, nr_inodes: int) -> None:
    """Mount a size- and inode-capped tmpfs, root-owned 0711, nosuid and nodev, at `target`."""
    opts = f"size={size_bytes},nr_inodes={nr_inodes},mode=0711,uid=0,gid=0"
    rc = _libc.mount(
        b"sandboxd", os.fsencode(target), b"tmpfs", MS_NOSUID | MS_NODEV, opts.encode()
    )
    _check(rc, f"mount tmpfs on {target}")


def resize_tmpfs(target: Path, *, size_bytes: int, nr_inodes: int) -> None:
    """Change the size and inode caps of the tmpfs mounted at `target` (same flags)."""
    opts = f"size={size_bytes},nr_inodes={nr_inodes}"
    flags = MS_REMOUNT | MS_NOSUID | MS_NODEV
    rc = _libc.mount(b"sandboxd", os.fsencode(target), b"tmpfs", flags, opts.encode())
    _check(rc, f"resize tmpfs on {target}")


def umount(target: Path) -> None:
    """Lazily unmount `target`, never following a symlink at the target itself."""
    rc = _libc.umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW)
    _check(rc, f"umount {target}")


def unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below `prefix` in this mount namespace, deepest first."""
    root = str(prefix).rstrip("/")
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            mount_point = unescape_mountinfo(line.split(" ")[4])
            if mount_point == root or mount_point.startswith(root + "/"):
                found.append(Path(mount_point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)
