"""Each tenant's download cache: one capped disk that every run of the tenant asking for
`download_cache` mounts at `/cache`, so that what one install fetched (pip's wheels and HTTP
cache, anything that honours `XDG_CACHE_HOME`) the next one finds.

Why a disk per tenant and not a directory: a cache is written by untrusted code, so it is
capped like a sandbox's workspace (an ext4 image of the tenant's `download_cache_mib`, full is
ENOSPC, never the host's disk) and kept apart per tenant (another tenant's runs never mount
it, so they can neither read what it fetched nor plant a wheel in it). Its files belong on disk
to one uid of the daemon's range that no run runs as (`DOWNLOAD_CACHE_UID_OFFSET`); each run
sees them, through an idmapped mount (`Workspace.attach_cache`), as its own, so runs of
different uids share one cache without a file mode or owner the daemon would have to change.
The daemon never operates on a path inside it: it makes the image, mounts it and hands its
tree to the backends.

The image is made on first use and kept across restarts (remounted on use, unmounted at
shutdown). Its size is fixed when it is made: to resize one, stop the daemon and remove
`<state>/caches/<tenant digest>/`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from pathlib import Path

from sandboxd.backends.base import CacheMount
from sandboxd.errors import InvalidRequest
from sandboxd.service.sandbox_disk import SandboxDisk
from sandboxd.settings import DOWNLOAD_CACHE_UID_OFFSET, Settings

log = logging.getLogger("sandboxd.service.caches")


class DownloadCaches:
    """The tenants' download caches under `<state>/caches/`, one directory per tenant."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / "caches"
        self.disk_uid = settings.identity.uid_base + DOWNLOAD_CACHE_UID_OFFSET
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def disk(self, tenant: str) -> SandboxDisk:
        """The tenant's cache disk (a digest names its directory: any tenant name is safe)."""
        return SandboxDisk(self.dir / hashlib.sha256(tenant.encode()).hexdigest()[:32])

    async def mount_for(self, tenant: str) -> CacheMount:
        """The tenant's cache, made and mounted if it is not yet; 400 if it has none."""
        size_mib = self.settings.quota_for(tenant).download_cache_mib
        if size_mib == 0:
            raise InvalidRequest(
                f"tenant {tenant!r} has no download cache on this daemon (its "
                "download_cache_mib is 0): leave `download_cache` out",
                field="download_cache",
            )
        disk = self.disk(tenant)
        async with self._locks[tenant]:
            await asyncio.to_thread(self.dir.mkdir, 0o700, False, True)
            if await asyncio.to_thread(disk.image.exists):
                await disk.mount()
                if not await asyncio.to_thread(disk.work.is_dir):  # a crash as it was made
                    # `mnt` is the daemon's (runs see only `work`): nothing to follow there
                    await asyncio.to_thread(disk.make_work, self.disk_uid)
            else:
                try:
                    await disk.create(size_mib, self.disk_uid)
                except BaseException:
                    await asyncio.shield(disk.destroy())  # nothing half made stays
                    raise
        return CacheMount(disk.work, self.disk_uid)

    async def close(self) -> None:
        """Unmount every cache (runs are over); their images stay for the next start."""
        children: list[Path] = await asyncio.to_thread(
            lambda: sorted(self.dir.iterdir()) if self.dir.is_dir() else []
        )
        for child in children:
            try:
                await SandboxDisk(child).unmount()
            except OSError as exc:
                log.error("cannot unmount the download cache %s: %s", child.name, exc)
