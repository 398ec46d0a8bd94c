"""Snapshots of persistent sandboxes: their rows, quota, images and the shared read-only mount
that every sandbox started from one (a fork) uses.

Why a manager of its own: a snapshot outlives the sandbox it was taken from (it is a copy), and
its mount outlives any one fork (it is shared), so neither belongs to one sandbox's
bookkeeping. `sandboxd.service.sandboxes` calls in here to take a snapshot under a sandbox's
lock and to hold (`acquire`) and let go of (`release`) a snapshot's mount as forks come and
go; the mount is there exactly while a fork of it exists. A snapshot of a fork (`parent`:
the fork's snapshot) is a layer above its parent's, whose image its forks use too. A snapshot
that forks or snapshots above it still use cannot be deleted (409, naming them); the sandbox a
snapshot came from can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from sandboxd.errors import Conflict, LimitTooHigh, NotFound, QuotaExceeded
from sandboxd.models import Snapshot, SnapshotCreate
from sandboxd.service import queries
from sandboxd.service.auth import Principal
from sandboxd.service.sandbox_disk import SandboxDisk
from sandboxd.service.snapshot_disk import SnapshotImage, allocated, frozen
from sandboxd.service.store import Store
from sandboxd.settings import Settings

MIB = 1024 * 1024
MAX_EVICTIONS = 1000  # cache snapshots one snapshot may push out


def to_model(row: queries.SnapshotRow) -> Snapshot:
    last_used = row.last_used_at or row.created_at
    return Snapshot(
        id=row.id,
        sandbox_id=row.sandbox_id,
        tenant=row.tenant,
        size_bytes=row.size_bytes,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        labels=json.loads(row.labels),
        ttl_s=row.ttl_s,
        last_used_at=datetime.fromtimestamp(last_used, UTC),
        expires_at=None
        if row.ttl_s is None
        else datetime.fromtimestamp(last_used + row.ttl_s, UTC),
    )


class Snapshots:
    """Takes, finds, mounts for forks and deletes snapshots."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.dir = settings.state_dir / "snapshots"
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: Snapshots under a fork that is being removed (its row gone, its mounts not yet):
        #: in use until `release` is done, whatever the rows say.
        self._pinned: Counter[str] = Counter()

    def image(self, snapshot_id: str, *, of_fork: bool = False) -> SnapshotImage:
        return SnapshotImage(self.dir / snapshot_id, of_fork=of_fork)

    async def start(self) -> None:
        """Drop what a dead daemon left half made (rows not ready, directories without a row);
        mounts come back as forks are remounted (`acquire`)."""
        await asyncio.to_thread(self.dir.mkdir, 0o700, False, True)
        await asyncio.to_thread(self.dir.chmod, 0o700)
        await self.store.call(queries.unfinished_snapshots)
        ready = {row.id for row in await self.store.call(queries.snapshots, None)}
        children = await asyncio.to_thread(lambda: sorted(self.dir.iterdir()))
        for child in children:
            if child.name not in ready:
                await SnapshotImage(child).destroy()

    async def close(self) -> None:
        children = await asyncio.to_thread(lambda: sorted(self.dir.iterdir()))
        for child in children:
            await SnapshotImage(child).unmount()

    # -- the API's operations --------------------------------------------------------------

    async def take(
        self,
        principal: Principal,
        row: queries.SandboxRow,
        disk: SandboxDisk,
        spec: SnapshotCreate,
        parent: str | None = None,
    ) -> Snapshot:
        """Snapshot the sandbox of `row` (a fork of `parent`, if given); its caller holds the
        sandbox's lock."""
        if spec.ttl_s is not None and spec.ttl_s > self.settings.max_snapshot_ttl_s:
            raise LimitTooHigh(
                f"ttl_s is above this daemon's maximum of {self.settings.max_snapshot_ttl_s}",
                field="ttl_s",
            )
        async with frozen(disk):
            return await self._take(principal, row, disk, spec, parent)

    async def _take(
        self,
        principal: Principal,
        row: queries.SandboxRow,
        disk: SandboxDisk,
        spec: SnapshotCreate,
        parent: str | None,
    ) -> Snapshot:
        estimate = await asyncio.to_thread(allocated, disk.image)  # the copy holds no more
        now = time.time()
        snap = queries.SnapshotRow(
            "snap_" + secrets.token_hex(8),
            principal.tenant,
            row.id,
            row.uid,
            estimate,
            json.dumps(spec.labels, sort_keys=True),
            now,
            "creating",
            parent,
            spec.ttl_s,
            now,
        )
        await self._reserve(snap)
        image = self.image(snap.id, of_fork=parent is not None)
        try:
            size = await image.copy(disk)
            await self.store.call(queries.finish_snapshot, snap.id, size)
        except BaseException:
            await asyncio.shield(self._forget(snap.id, image))
            raise
        return await self.get(principal, snap.id)

    async def _reserve(self, snap: queries.SnapshotRow) -> None:
        """Insert the row of a snapshot being made, its estimate counted against the tenant's
        quota; over it, the tenant's idle cache snapshots go, least recently used first, until
        it fits (429 when none is left to evict)."""
        quota = self.settings.quota_for(snap.tenant).max_snapshot_disk_mib
        wanted = -(-snap.size_bytes // MIB)

        def reserve(db: sqlite3.Connection) -> tuple[int, list[queries.SnapshotRow]]:
            used = queries.snapshot_usage(db, snap.tenant)
            if used + wanted <= quota:
                queries.insert_snapshot(db, snap)
                return used, []
            return used, queries.idle_cached_snapshots(db, snap.tenant, None)

        kept: set[str] = set()  # candidates that turned out in use: not asked again
        for _ in range(MAX_EVICTIONS):
            used, candidates = await self.store.call(reserve)
            if not candidates and used + wanted <= quota:
                return
            evictable = [c for c in candidates if c.id not in kept]
            if not evictable:
                raise QuotaExceeded(
                    f"tenant's snapshots would hold {used + wanted} MiB of disk, over its "
                    f"{quota} MiB: delete some (DELETE /v1/snapshots/{{id}})",
                    field="max_snapshot_disk_mib",
                )
            victim = evictable[0]
            users = await self._retire(victim.id)
            if users:
                kept.add(victim.id)
            elif users == []:
                await self.store.record(
                    "snapshot.evict",
                    tenant=victim.tenant,
                    token_id=None,
                    target=victim.id,
                    result={"state": "evicted", "for": snap.id, "size_bytes": victim.size_bytes},
                )
        raise QuotaExceeded(  # a bound, not a case: every pass inserts, refuses or evicts one
            f"could not make room for the snapshot in {MAX_EVICTIONS} evictions",
            field="max_snapshot_disk_mib",
        )

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Delete the cache snapshots nothing has used for their ttl_s; (id, tenant) of each."""
        expired = []
        for row in await self.store.call(queries.idle_cached_snapshots, None, time.time()):
            if await self._retire(row.id) == []:
                expired.append((row.id, row.tenant))
        return expired

    async def _retire(self, snapshot_id: str) -> list[str] | None:
        """Delete the snapshot unless something uses it: what uses it ([] once deleted), or
        None when it was gone already."""

        def retire(db: sqlite3.Connection) -> list[str] | None:
            if queries.get_snapshot(db, snapshot_id) is None:
                return None
            users = queries.snapshot_users(db, snapshot_id)
            if self._pinned[snapshot_id]:
                users.append("a sandbox being deleted")
            if not users:
                queries.delete_snapshot(db, snapshot_id)
            return users

        async with self._locks[snapshot_id]:
            users = await self.store.call(retire)
            if users == []:
                await self.image(snapshot_id).destroy()
        if users is not None and not users:
            self._locks.pop(snapshot_id, None)
        return users

    async def _forget(self, snapshot_id: str, image: SnapshotImage) -> None:
        try:
            await image.destroy()
        finally:
            await self.store.call(queries.delete_snapshot, snapshot_id)

    async def _row(self, principal: Principal, snapshot_id: str) -> queries.SnapshotRow:
        row = await self.store.call(queries.get_snapshot, snapshot_id)
        # Another tenant's snapshot is "not found" too (but for admin): existence does not leak.
        if row is None or not (row.tenant == principal.tenant or principal.can("admin")):
            raise NotFound(f"no snapshot {snapshot_id!r}")
        return row

    async def get(self, principal: Principal, snapshot_id: str) -> Snapshot:
        return to_model(await self._row(principal, snapshot_id))

    async def list_for(self, principal: Principal) -> list[Snapshot]:
        """The tenant's snapshots; every tenant's for admin."""
        tenant = None if principal.can("admin") else principal.tenant
        return [to_model(r) for r in await self.store.call(queries.snapshots, tenant)]

    async def delete(self, principal: Principal, snapshot_id: str) -> None:
        """Delete a snapshot that no sandbox was started from (those still there)."""
        await self._row(principal, snapshot_id)
        users = await self._retire(snapshot_id)
        if users is None:
            raise NotFound(f"no snapshot {snapshot_id!r}")
        if users:
            shown = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "")
            raise Conflict(
                f"snapshot {snapshot_id} is in use by {len(users)} sandbox(es) started "
                f"from it or snapshot(s) taken of those: {shown}; delete them first",
                field="snapshot_id",
            )

    # -- forks -----------------------------------------------------------------------------

    async def source(self, principal: Principal, snapshot_id: str) -> queries.SnapshotRow:
        """The snapshot a new sandbox of `principal` starts from: its own tenant's only."""
        row = await self.store.call(queries.get_snapshot, snapshot_id)
        if row is None or row.tenant != principal.tenant:
            raise NotFound(f"no snapshot {snapshot_id!r}", field="from_snapshot")
        await self.store.call(queries.touch_snapshot_chain, snapshot_id, time.time())
        return row

    async def acquire(self, snapshot_id: str) -> list[tuple[Path, int]]:
        """The layers of a fork of the snapshot, top first (its tree and the uid owning its
        files, then those of the snapshots below it), each image mounted (once, for every
        fork). The caller has a row for its fork (creating or active), which keeps `release`
        from unmounting them."""
        layers = []
        for row in await self.store.call(queries.snapshot_chain, snapshot_id):
            async with self._locks[row.id]:
                image = self.image(row.id, of_fork=row.parent is not None)
                await image.mount()
            layers.append((image.layer, row.uid))
        return layers

    @contextlib.asynccontextmanager
    async def pinned(self, snapshot_id: str) -> AsyncIterator[None]:
        """Keep the snapshot and those below it from going while a fork of it is removed."""
        chain = [r.id for r in await self.store.call(queries.snapshot_chain, snapshot_id)]
        self._pinned.update(chain)
        try:
            yield
        finally:
            self._pinned.subtract(chain)
            for ident in chain:
                if self._pinned[ident] <= 0:
                    del self._pinned[ident]

    async def release(self, snapshot_id: str) -> None:
        """A fork is gone: unmount each image of its layers that no other fork uses. Their
        idle time (a cache's ttl_s) starts again now."""
        await self.store.call(queries.touch_snapshot_chain, snapshot_id, time.time())
        for row in await self.store.call(queries.snapshot_chain, snapshot_id):
            async with self._locks[row.id]:
                if not await self.store.call(queries.forks_of, row.id, deep=True):
                    await self.image(row.id).unmount()
