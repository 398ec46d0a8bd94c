"""Idmapped bind mounts: a tree whose files, owned by one host uid on disk, appear owned by
another through the mount.

Why: a snapshot's files belong to the uid of the sandbox it was taken from, and every sandbox
has a host uid of its own. A fork must be able to change those files (overlayfs copies a file
up keeping the owner it sees in the lower layer), yet must not run as the source's uid. So the
fork's lower layer is the snapshot's tree seen through an idmapped mount (Linux >= 5.19,
supported by overlayfs as a lower layer) that shows the source's uid and gid as the fork's;
on disk nothing changes, and the snapshot stays read-only.

Mechanics, all by the daemon's own ids (never request data, never a shell string):
`open_tree(OPEN_TREE_CLONE)` detaches a copy of the mount, `mount_setattr(MOUNT_ATTR_IDMAP)`
gives it the mapping of a user namespace that a short-lived child holds only while the
namespace's fd is opened, and `move_mount` attaches it on a root-owned directory.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)

# x86_64 and aarch64 share these numbers (the new mount API came after the unified table).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000
NS_WAIT_S = 5.0


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _userns_fd(inside: int, outside: int) -> int:
    """An fd of a fresh user namespace mapping uid and gid `inside` to `outside` (one id).

    A child unshares its user namespace and waits on its stdin; the maps are written from
    here (root in the parent namespace may map any id), the namespace opened, the child ended:
    the fd keeps the namespace alive for as long as it is needed."""
    own = os.readlink("/proc/self/ns/user")
    child = subprocess.Popen(  # a fixed argv: no request data in it
        ["/usr/bin/unshare", "--user", "--", "/bin/cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    try:
        deadline = time.monotonic() + NS_WAIT_S
        ns = f"/proc/{child.pid}/ns/user"
        while os.readlink(ns) == own:
            if child.poll() is not None or time.monotonic() > deadline:
                raise OSError("the user-namespace helper did not start")
            time.sleep(0.001)
        line = f"{inside} {outside} 1\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child.pid}/{name}", "w", encoding="ascii") as fh:
                fh.write(line)
        return os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        child.kill()
        child.communicate()


def idmapped_bind(
    source: Path, target: Path, *, disk_uid: int, seen_uid: int, read_only: bool = True
) -> None:
    """Mount `source` on `target` nosuid, nodev (and read-only unless told), with files that
    belong to `disk_uid` (and its gid) on disk seen as `seen_uid`'s; any other owner is
    unmapped. Written through it, a file belongs to `disk_uid` on disk."""
    userns = _userns_fd(disk_uid, seen_uid)
    try:
        _attach(source, target, userns, read_only=read_only)
    finally:
        os.close(userns)


def clone_tree(source: Path) -> int:
    """A detached copy of the mount at `source` (a final symlink is not followed), as an fd
    another mount namespace can attach with `move_mount` (a forked run's jail does)."""
    return _check(
        _libc.syscall(
            SYS_OPEN_TREE,
            AT_FDCWD,
            os.fsencode(source),
            ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW),
        ),
        f"open_tree {source}",
    )


def _attach(source: Path, target: Path, userns: int, *, read_only: bool) -> None:
    tree = _check(
        _libc.syscall(
            SYS_OPEN_TREE,
            AT_FDCWD,
            os.fsencode(source),
            ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
        ),
        f"open_tree {source}",
    )
    try:
        flags = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        attr = _MountAttr(flags | (MOUNT_ATTR_RDONLY if read_only else 0), 0, 0, userns)
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR,
                tree,
                b"",
                ctypes.c_uint(AT_EMPTY_PATH),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"mount_setattr {source}",
        )
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT,
                tree,
                b"",
                AT_FDCWD,
                os.fsencode(target),
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
            ),
            f"move_mount {target}",
        )
    finally:
        os.close(tree)
