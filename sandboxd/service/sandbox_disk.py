"""What a persistent sandbox is on the host: its ext4 image, its mount, and the main file a
`code` run writes into its workspace.

Each sandbox has a disk image of `disk_mib` (its quota, inodes capped too) under
`<state>/sandboxes/<id>/`, loop-mounted nosuid,nodev at `mnt/`; `mnt/work` (owned by the
sandbox's own unprivileged uid) is the `/workspace` of every run in it. Kept apart from
`sandboxd.service.sandboxes` (the bookkeeping: rows, quotas, locks, expiry) because this is
the part that touches the filesystem and runs mkfs and mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from sandboxd.backends.host import linux
from sandboxd.backends.host.workspace import WorkTree
from sandboxd.errors import BackendUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from sandboxd.models import MAIN_FILE


async def run_tool(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackendUnavailable(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")


class SandboxDisk:
    """The ext4 image of one sandbox and its mount."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.image = root / "disk.img"
        self.mnt = root / "mnt"
        self.work = self.mnt / "work"
        self.lower = root / "lower"  # a fork's lower layer (`sandboxd.service.snapshot_disk`)

    def _make_image(self, disk_mib: int) -> None:
        # 0711, explicitly (whatever the umask): nsjail traverses them; nobody else lists them.
        for d in (self.root, self.mnt):
            d.mkdir(mode=0o711)
            d.chmod(0o711)
        # The image holds every file of the sandbox: owner-only from its creation.
        fd = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, disk_mib * 1024 * 1024)  # sparse: used as files are written
        finally:
            os.close(fd)

    def make_work(self, uid: int) -> None:
        self.mnt.chmod(0o711)
        self.work.mkdir(mode=0o700)
        # A fresh directory on a fresh filesystem: nothing of the sandbox exists to follow.
        os.chown(self.work, uid, uid)

    async def _mkfs(self, disk_mib: int) -> None:
        # lazy_journal_init: the journal of a fresh sparse image is holes, which read as zeros,
        # so mkfs need not write them (1/32 of the image, allocated for nothing otherwise).
        inodes = str(max(1024, disk_mib * 128))
        await run_tool(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-N",
            inodes,
            "-E",
            "root_owner=0:0,lazy_journal_init=1",
            str(self.image),
        )

    async def create(self, disk_mib: int, uid: int) -> None:
        await asyncio.to_thread(self._make_image, disk_mib)
        await self._mkfs(disk_mib)
        await self.mount()
        await asyncio.to_thread(self.make_work, uid)

    async def _mount_image(self) -> None:
        if not self.mnt.is_mount():
            await run_tool(
                "mount", "-o", "loop,nosuid,nodev,noatime", str(self.image), str(self.mnt)
            )

    async def mount(self) -> None:
        await self._mount_image()

    async def unmount(self) -> None:
        """Unmount the workspace's mounts, innermost first: a fork's overlay (`work`) and its
        lower layers (`lower`, `lower.1`, ...) when it is one, then the image."""
        lowers = await asyncio.to_thread(lambda: sorted(self.root.glob("lower*")))
        for path in (self.work, *lowers, self.mnt):
            if path.is_mount():
                await asyncio.to_thread(linux.umount, path)

    async def destroy(self) -> None:
        await self.unmount()
        await asyncio.to_thread(shutil.rmtree, self.root, True)


class CodeMain:
    """The main file a `code` run writes into a sandbox's workspace: the request's, not the
    workspace's. While it exists a marker beside the disk (root-owned, outside the workspace)
    names it and its digest, so that it goes after the run, or, after a crash, before the next
    one; a file of that name that the workspace owns is never overwritten, nor removed."""

    def __init__(self, tree: WorkTree, marker: Path, max_bytes: int) -> None:
        self.tree, self.marker, self.max_bytes = tree, marker, max_bytes

    def clear_leftover(self) -> None:
        """Remove what a run that did not finish left (a crash of the daemon), if unchanged."""
        try:
            name, digest = self.marker.read_text().split()
        except (FileNotFoundError, ValueError):
            return
        if name in MAIN_FILE.values():
            self._drop(name, digest)
        self.marker.unlink(missing_ok=True)

    def claim(self, main: str, code: bytes) -> None:
        if self.tree.exists(main):
            raise InvalidRequest(
                f"the workspace already holds {main!r}, which `code` would overwrite: "
                "delete it first, or run it without `code`",
                field="code",
            )
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{main} {hashlib.sha256(code).hexdigest()}\n")

    def release(self, main: str, code: bytes) -> None:
        self._drop(main, hashlib.sha256(code).hexdigest())
        self.marker.unlink(missing_ok=True)

    def _drop(self, name: str, digest: str) -> None:
        """Remove `name` if it still holds what the daemon wrote (a run may have made it its
        own: then it stays, like any file of the workspace)."""
        with contextlib.suppress(InvalidRequest, NotFound, PayloadTooLarge, OSError):
            data = self.tree.read_file(name, max_bytes=self.max_bytes)
            if hashlib.sha256(data).hexdigest() == digest:
                self.tree.delete(name)
