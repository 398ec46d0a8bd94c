"""What snapshots and forks are on the host: a frozen copy of a sandbox's image, and a sandbox
whose workspace is an overlay over it.

Why this way (the host's filesystem has no reflinks): a snapshot is a sparse copy of the
source's ext4 image, taken while that filesystem is frozen (consistent and clean on disk, its
journal flushed), made 0400 and never modified again. It is loop-mounted read-only once
(`noload`: nothing is ever written to it) however many forks use it. A fork is a sandbox
image of its own, of its own `disk_mib`, that holds only an overlayfs `upper/` and its
`ovwork/`; its workspace is the overlay of that upper over the snapshot's `work`, seen
through an idmapped mount (`sandboxd.backends.host.idmap`) that shows the source's uid as the
fork's. Creating a fork copies nothing: mkfs of a sparse image and three mounts. A snapshot of
a fork is a copy of the fork's image, whose `upper/` (with the kernel's whiteouts and opaque
marks) is a layer above the snapshots below it, each lower layer idmapped on its own.

Everything here is a root-owned directory the daemon made, named by the daemon's own ids;
the only paths a sandbox can write are below `upper/`, which the daemon never touches
(overlayfs does, with the mounter's credentials, as the kernel's own copy-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from sandboxd.backends.host import idmap, linux
from sandboxd.errors import BackendUnavailable
from sandboxd.service.sandbox_disk import SandboxDisk, run_tool

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
_OVERLAY_UNSAFE = frozenset(",:\\=")


def _freeze(mnt: Path, freeze: bool) -> None:
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fcntl.ioctl(fd, FIFREEZE if freeze else FITHAW, 0)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def frozen(disk: SandboxDisk) -> AsyncIterator[None]:
    """`disk`'s filesystem frozen: all it holds written to its image, clean (journal flushed),
    and unchanging until thawed (the caller holds the sandbox's lock: no run in flight)."""
    await asyncio.to_thread(_freeze, disk.mnt, True)
    try:
        yield
    finally:
        await asyncio.shield(asyncio.to_thread(_freeze, disk.mnt, False))


def thaw(mnt: Path) -> None:
    """Thaw a filesystem a daemon that died mid-snapshot left frozen (else: nothing)."""
    try:
        _freeze(mnt, False)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            raise


def allocated(path: Path) -> int:
    """Bytes of disk a file holds (its blocks, not its apparent size)."""
    return os.stat(path).st_blocks * 512


class SnapshotImage:
    """One snapshot's read-only image under `<state>/snapshots/<id>/`, and its mount."""

    def __init__(self, root: Path, *, of_fork: bool = False) -> None:
        self.root = root
        self.image = root / "disk.img"
        self.mnt = root / "mnt"
        # The tree a fork sees: a sandbox's workspace; of a fork, the upper layer it wrote
        # (with its whiteouts), which goes above the layers of the snapshot it came from.
        self.layer = self.mnt / ("upper" if of_fork else "work")

    async def copy(self, disk: SandboxDisk) -> int:
        """Copy `disk`'s image, which the caller holds `frozen`; the bytes the copy holds."""
        for d in (self.root, self.mnt):
            await asyncio.to_thread(d.mkdir, 0o700)
        await run_tool("cp", "--sparse=always", str(disk.image), str(self.image))
        await asyncio.to_thread(self.image.chmod, 0o400)
        return await asyncio.to_thread(allocated, self.image)

    async def mount(self) -> None:
        if not self.mnt.is_mount():
            await run_tool(
                "mount",
                "-o",
                "loop,ro,noload,nosuid,nodev,noatime",
                str(self.image),
                str(self.mnt),
            )

    async def unmount(self) -> None:
        if self.mnt.is_mount():
            await asyncio.to_thread(linux.umount, self.mnt)

    async def destroy(self) -> None:
        await self.unmount()
        await asyncio.to_thread(shutil.rmtree, self.root, True)


class ForkDisk(SandboxDisk):
    """A sandbox started from a snapshot: its own image holds the overlay's upper layer; its
    workspace (`mnt/work`, what backends bind-mount) is the overlay. `layers`, top first: each
    snapshot's tree and the uid that owns its files (a snapshot of a fork stacks on the one
    that fork came from), each seen through its own idmapped mount (`lower`, `lower.1`...)."""

    def __init__(self, root: Path, layers: list[tuple[Path, int]], uid: int) -> None:
        super().__init__(root)
        self.layers, self.uid = layers, uid
        self.lowers = [self.lower] + [root / f"lower.{i}" for i in range(1, len(layers))]
        self.upper = self.mnt / "upper"
        self.ovwork = self.mnt / "ovwork"

    def _make_layers(self) -> None:
        self.mnt.chmod(0o711)
        for d in (self.ovwork, self.work, *self.lowers):
            d.mkdir(mode=0o700)
        self.upper.mkdir(mode=0o700)
        # A fresh directory on a fresh filesystem; the overlay's root takes its owner and mode.
        os.chown(self.upper, self.uid, self.uid)

    def _overlay_options(self) -> str:
        dirs = (*self.lowers, self.upper, self.ovwork)
        if any(c in _OVERLAY_UNSAFE for d in dirs for c in str(d)):
            raise BackendUnavailable(
                "the state directory's path holds a character overlayfs options cannot carry "
                "(, : \\ =): forks need another state_dir"
            )
        lowers = ":".join(map(str, self.lowers))
        return (
            f"lowerdir={lowers},upperdir={self.upper},workdir={self.ovwork},"
            "nosuid,nodev,noatime,metacopy=off,redirect_dir=nofollow"
        )

    async def create(self, disk_mib: int, uid: int) -> None:
        if uid != self.uid:
            raise ValueError("a fork's disk is made for the uid it was built with")
        await asyncio.to_thread(self._make_image, disk_mib)
        await self._mkfs(disk_mib)
        await self._mount_image()
        await asyncio.to_thread(self._make_layers)
        await self._mount_overlay()

    async def mount(self) -> None:
        await self._mount_image()
        await self._mount_overlay()

    async def _mount_overlay(self) -> None:
        for lower, (tree, owner) in zip(self.lowers, self.layers, strict=True):
            if lower.is_mount():
                continue
            try:
                await asyncio.to_thread(
                    idmap.idmapped_bind, tree, lower, disk_uid=owner, seen_uid=self.uid
                )
            except OSError as exc:
                raise BackendUnavailable(f"cannot mount the snapshot idmapped: {exc}") from None
        if not self.work.is_mount():
            try:
                await run_tool(
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    self._overlay_options(),
                    str(self.work),
                )
            except BaseException:
                for lower in self.lowers:
                    with contextlib.suppress(OSError):
                        await asyncio.shield(asyncio.to_thread(linux.umount, lower))
                raise
