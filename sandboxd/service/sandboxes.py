"""Persistent sandboxes: workspaces that outlive runs and restarts, and what happens in them.

The manager keeps each sandbox's row (quota, uid, spec, last use), serialises what touches its
workspace (runs, file reads and writes, archives: one at a time, under the sandbox's lock,
each counting as a use), merges the sandbox's defaults into a run asked of it, and expires
sandboxes left idle. Its disk and mount are `sandboxd.service.sandbox_disk`'s; every run in a
sandbox is still a fresh jail with a fresh /tmp. A sandbox may start from a snapshot (a fork:
`sandboxd.service.snapshots`), whose workspace is an overlay over the snapshot's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sandboxd.backends.base import RunControl, SandboxMount
from sandboxd.backends.host.workspace import WorkTree
from sandboxd.errors import BackendUnavailable, Conflict, InvalidRequest, NotFound, QuotaExceeded
from sandboxd.models import (
    MAIN_FILE,
    Limits,
    RunRequest,
    RunResult,
    Sandbox,
    SandboxCreate,
    Snapshot,
    SnapshotCreate,
)
from sandboxd.service import queries
from sandboxd.service.auth import Principal
from sandboxd.service.policy import apply_caps, check_network
from sandboxd.service.runs import PreparedRun, RunManager
from sandboxd.service.sandbox_disk import CodeMain, SandboxDisk
from sandboxd.service.snapshot_disk import ForkDisk, thaw
from sandboxd.service.snapshots import Snapshots
from sandboxd.service.store import Store
from sandboxd.settings import DOWNLOAD_CACHE_UID_OFFSET, Settings

SANDBOX_UID_OFFSET = 50_000
MAX_LAYERS = 16  # snapshots stacked under one fork (overlayfs takes up to 500)
log = logging.getLogger("sandboxd.service.sandboxes")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _origin(row: queries.SandboxRow) -> str | None:
    """The snapshot a sandbox was started from, if it was."""
    origin = json.loads(row.spec).get("from_snapshot")
    return origin if isinstance(origin, str) else None


def _to_model(row: queries.SandboxRow, default_backend: str = "nsjail") -> Sandbox:
    spec = SandboxCreate.model_validate_json(row.spec)
    return Sandbox(
        id=row.id,
        tenant=row.tenant,
        language=spec.language,
        image=spec.image,
        backend=spec.backend or default_backend,
        limits=spec.limits,
        network=spec.network,
        ttl_s=spec.ttl_s,
        state=row.state,
        created_at=_dt(row.created_at),
        last_used_at=_dt(row.last_used_at),
        expires_at=_dt(row.last_used_at + spec.ttl_s),
    )


class SandboxManager:
    """Creates, finds, runs in, expires and deletes persistent sandboxes."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.dir = settings.state_dir / "sandboxes"
        self.uid_base = settings.identity.uid_base + SANDBOX_UID_OFFSET
        self.uid_end = settings.identity.uid_base + DOWNLOAD_CACHE_UID_OFFSET  # not its uid
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.snapshots = Snapshots(settings, store)
        #: Called with a sandbox's id before its workspace goes (its contexts end there).
        self.before_remove: list[Callable[[str], Awaitable[None]]] = []

    def disk(self, sandbox_id: str) -> SandboxDisk:
        return SandboxDisk(self.dir / sandbox_id)

    async def fork_disk(self, sandbox_id: str, uid: int, source: queries.SnapshotRow) -> ForkDisk:
        """A fork's disk, its snapshot mounted (held until `snapshots.release`)."""
        layers = await self.snapshots.acquire(source.id)
        return ForkDisk(self.dir / sandbox_id, layers, uid)

    async def start(self) -> int:
        """Remount the disks of active sandboxes (after a crash or reboot), forks with their
        snapshots; their count."""
        await asyncio.to_thread(self.dir.mkdir, 0o711, False, True)
        await asyncio.to_thread(self.dir.chmod, 0o711)
        await asyncio.to_thread(self._tighten_images)
        await self.snapshots.start()
        rows = await self.store.call(queries.active_sandboxes)
        for row in rows:
            origin = _origin(row)
            source = await self.store.call(queries.get_snapshot, origin) if origin else None
            if source is not None:
                await (await self.fork_disk(row.id, row.uid, source)).mount()
            elif origin:
                log.error("sandbox %s: its snapshot %s is gone; no workspace", row.id, origin)
            else:
                await self.disk(row.id).mount()
                # A daemon that died while snapshotting it left it frozen.
                await asyncio.to_thread(thaw, self.disk(row.id).mnt)
        return len(rows)

    def _tighten_images(self) -> None:
        """Disk images made before they were created 0600 become 0600."""
        for image in self.dir.glob("*/disk.img"):
            image.chmod(0o600)

    async def close(self) -> None:
        """Unmount every sandbox disk (its files stay in the image; `start` remounts)."""
        children = await asyncio.to_thread(lambda: sorted(self.dir.iterdir()))
        for child in children:
            await SandboxDisk(child).unmount()
        await self.snapshots.close()

    async def count_active(self) -> int:
        return await self.store.call(queries.count_active_sandboxes)

    async def create(self, principal: Principal, spec: SandboxCreate, runs: RunManager) -> Sandbox:
        chosen = runs.backend_for(spec.backend, spec.image).name
        spec.backend = "docker" if chosen == "docker" else "nsjail"
        spec.limits = apply_caps(spec.limits, self.settings.max_limits)
        check_network(spec.network, self.settings.egress)
        if spec.ttl_s > self.settings.max_sandbox_ttl_s:
            raise InvalidRequest(
                f"ttl_s is above this daemon's maximum of {self.settings.max_sandbox_ttl_s}",
                field="ttl_s",
            )
        quota = self.settings.quota_for(principal.tenant)
        sandbox_id = "sbx_" + secrets.token_hex(8)
        now = time.time()
        origin = spec.from_snapshot
        source = await self.snapshots.source(principal, origin) if origin else None

        def reserve(db: sqlite3.Connection) -> int:
            if origin and queries.get_snapshot(db, origin) is None:  # deleted meanwhile
                raise NotFound(f"no snapshot {origin!r}", field="from_snapshot")
            count, disk = queries.tenant_usage(db, principal.tenant)
            if count >= quota.max_sandboxes:
                raise QuotaExceeded(
                    f"tenant has {count} sandboxes, its maximum", field="max_sandboxes"
                )
            if disk + spec.limits.disk_mib > quota.max_disk_mib:
                raise QuotaExceeded(
                    f"tenant's sandboxes would use {disk + spec.limits.disk_mib} MiB of disk, "
                    f"over its {quota.max_disk_mib} MiB",
                    field="max_disk_mib",
                )
            used = queries.used_uids(db)
            free = (u for u in range(self.uid_base, self.uid_end) if u not in used)
            uid = next(free, None)
            if uid is None:
                raise QuotaExceeded("this daemon holds as many sandboxes as it has uids")
            row = queries.SandboxRow(
                sandbox_id,
                principal.tenant,
                uid,
                spec.model_dump_json(),
                spec.limits.disk_mib,
                created_at=now,
                last_used_at=now,
                state="creating",
            )
            queries.insert_sandbox(db, row)
            return uid

        uid = await self.store.call(reserve)
        disk = self.disk(sandbox_id)
        try:
            if source is not None:
                disk = await self.fork_disk(sandbox_id, uid, source)
            await disk.create(spec.limits.disk_mib, uid)
        except BaseException:
            await asyncio.shield(self._forget(sandbox_id, disk, origin))
            raise
        await self.store.call(queries.activate_sandbox, sandbox_id)
        return await self.get(principal, sandbox_id)

    async def _forget(self, sandbox_id: str, disk: SandboxDisk, origin: str | None) -> None:
        """Undo a sandbox that could not be made: no image, no mount, no row remain."""
        with contextlib.suppress(OSError, BackendUnavailable):
            await disk.destroy()
        await self.store.call(queries.delete_sandbox, sandbox_id)
        if origin:
            with contextlib.suppress(OSError, BackendUnavailable):
                await self.snapshots.release(origin)

    async def _row(self, principal: Principal, sandbox_id: str) -> queries.SandboxRow:
        row = await self.store.call(queries.active_sandbox, sandbox_id)
        # Another tenant's sandbox is "not found" too: existence does not leak.
        if row is None or row.tenant != principal.tenant:
            raise NotFound(f"no sandbox {sandbox_id!r}")
        return row

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        return _to_model(await self._row(principal, sandbox_id))

    async def list_for(self, principal: Principal) -> list[Sandbox]:
        rows = await self.store.call(queries.tenant_sandboxes, principal.tenant)
        return [_to_model(r) for r in rows]

    async def delete(self, principal: Principal, sandbox_id: str, state: str = "deleted") -> None:
        """Delete a sandbox; of concurrent deletes exactly one succeeds, the others are 404."""
        await self._row(principal, sandbox_id)
        async with self._locks[sandbox_id]:
            if not await self._remove(sandbox_id, state):
                raise NotFound(f"no sandbox {sandbox_id!r}")

    async def _remove(self, sandbox_id: str, state: str) -> bool:
        """Mark the sandbox `state` and destroy its disk; False if it was no longer active
        (someone else removed it meanwhile), which then changes nothing."""
        row = await self.store.call(queries.active_sandbox, sandbox_id)
        if row is None:
            return False
        origin = _origin(row)
        async with self.snapshots.pinned(origin) if origin else contextlib.nullcontext():
            if not await self.store.call(queries.retire_sandbox, sandbox_id, state):
                return False
            for hook in self.before_remove:  # its contexts end before its disk goes
                try:
                    await hook(sandbox_id)
                except Exception:  # the row is retired: the rest of the removal must go on
                    log.exception("sandbox %s: a hook before its removal failed", sandbox_id)
            await self.disk(sandbox_id).destroy()
            self._locks.pop(sandbox_id, None)
            if origin:
                await self.snapshots.release(origin)
        return True

    async def snapshot(
        self, principal: Principal, sandbox_id: str, spec: SnapshotCreate
    ) -> Snapshot:
        """Snapshot a sandbox's workspace, between its runs and file calls (under its lock).
        Of a fork, the snapshot holds what the fork wrote, stacked on the fork's snapshot."""
        origin = _origin(await self._row(principal, sandbox_id))
        if origin:
            depth = len(await self.store.call(queries.snapshot_chain, origin))
            if depth >= MAX_LAYERS:
                raise Conflict(
                    f"sandbox {sandbox_id} stands on {depth} snapshots, the most a snapshot "
                    f"may stack ({MAX_LAYERS}): snapshot a sandbox prepared from scratch",
                    field="sandbox_id",
                )
        async with self.lock(sandbox_id):
            row = await self._row(principal, sandbox_id)  # it may be gone meanwhile
            disk = self.disk(sandbox_id)
            snap = await self.snapshots.take(principal, row, disk, spec, origin)
            await self.touch(sandbox_id)
        return snap

    async def touch(self, sandbox_id: str) -> None:
        await self.store.call(queries.touch_sandbox, sandbox_id, time.time())

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks[sandbox_id]

    async def tree(self, principal: Principal, sandbox_id: str) -> WorkTree:
        row = await self._row(principal, sandbox_id)
        return WorkTree(self.disk(sandbox_id).work, uid=row.uid, gid=row.uid)

    async def mount(self, principal: Principal, sandbox_id: str) -> SandboxMount:
        """The sandbox's workspace as a jail mounts it."""
        row = await self._row(principal, sandbox_id)
        return SandboxMount(self.disk(sandbox_id).work, row.uid)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Delete sandboxes idle for longer than their ttl_s; (id, tenant) of each."""
        now = time.time()
        rows = await self.store.call(queries.active_sandboxes)
        expired = []
        for row in rows:
            ttl = json.loads(row.spec)["ttl_s"]
            if row.last_used_at + ttl > now or self._locks[row.id].locked():
                continue
            async with self._locks[row.id]:
                if await self._remove(row.id, "expired"):
                    expired.append((row.id, row.tenant))
        return expired

    @staticmethod
    def run_limits(sandbox: Sandbox, asked: Limits) -> Limits:
        """A run's limits: what it set, else the sandbox's defaults."""
        merged = sandbox.limits.model_dump()
        merged.update(asked.model_dump(include=asked.model_fields_set))
        return Limits.model_validate(merged)

    def prepare_run(self, sandbox: Sandbox, asked: RunRequest) -> PreparedRun:
        """A run in `sandbox` as it will go: where the sandbox lives (asking for elsewhere is
        refused), with the sandbox's defaults for what the request left out."""
        if asked.backend is not None and asked.backend != sandbox.backend:
            raise InvalidRequest(
                f"this sandbox runs on {sandbox.backend}; its runs cannot choose backend "
                f"{asked.backend!r} (leave `backend` out)",
                field="backend",
            )
        if asked.image is not None and asked.image != sandbox.image:
            raise InvalidRequest(
                f"this sandbox runs in image {sandbox.image!r}; its runs cannot choose another "
                "(leave `image` out)",
                field="image",
            )
        update: dict[str, object] = {"limits": self.run_limits(sandbox, asked.limits)}
        if "language" not in asked.model_fields_set:
            update["language"] = sandbox.language
        if "network" not in asked.model_fields_set:
            update["network"] = sandbox.network
        update["backend"], update["image"] = sandbox.backend, sandbox.image
        return PreparedRun.of(asked.model_copy(update=update), sandbox.id)

    async def run(
        self,
        principal: Principal,
        prepared: PreparedRun,
        *,
        runs: RunManager,
        trace_id: str,
        control: RunControl,
    ) -> RunResult:
        """Run in the sandbox's workspace. `code` is the request's, not the workspace's: its
        main file is written for the run and removed after it (`CodeMain`)."""
        sandbox_id = prepared.sandbox_id
        assert sandbox_id is not None  # noqa: S101  # an invariant: prepare_run set it
        async with self.lock(sandbox_id):
            row = await self._row(principal, sandbox_id)
            disk = self.disk(sandbox_id)
            request = prepared.request
            main, code = MAIN_FILE[request.language], request.code.encode()
            owned = CodeMain(
                WorkTree(disk.work, uid=row.uid, gid=row.uid),
                disk.root / "main.owned",
                self.settings.max_request_bytes,
            )
            await asyncio.to_thread(owned.clear_leftover)
            if code:
                await asyncio.to_thread(owned.claim, main, code)
            await self.touch(sandbox_id)
            try:
                result = await runs.run(
                    prepared,
                    principal=principal,
                    trace_id=trace_id,
                    sandbox=SandboxMount(disk.work, row.uid),
                    control=control,
                )
            finally:
                if code:
                    await asyncio.shield(asyncio.to_thread(owned.release, main, code))
            await self.touch(sandbox_id)
            return result

    async def write_file(
        self, principal: Principal, sandbox_id: str, rel: str, data: bytes
    ) -> None:
        async with self.lock(sandbox_id):
            tree = await self.tree(principal, sandbox_id)
            await asyncio.to_thread(tree.write_file, rel, data)
            await self.touch(sandbox_id)

    async def read_file(self, principal: Principal, sandbox_id: str, rel: str) -> bytes:
        async with self.lock(sandbox_id):
            tree = await self.tree(principal, sandbox_id)
            cap = self.settings.max_file_bytes
            data = await asyncio.to_thread(tree.read_file, rel, max_bytes=cap)
            await self.touch(sandbox_id)
        return data

    async def delete_file(self, principal: Principal, sandbox_id: str, rel: str) -> None:
        async with self.lock(sandbox_id):
            tree = await self.tree(principal, sandbox_id)
            await asyncio.to_thread(tree.delete, rel)
            await self.touch(sandbox_id)

    async def archive(self, principal: Principal, sandbox_id: str) -> int:
        """The whole workspace as a tar (links stored as links, never followed), in an
        unlinked file under the state dir: its open descriptor, which the caller closes."""
        tmp_dir = self.settings.state_dir / "tmp"

        def build(tree: WorkTree) -> int:
            tmp_dir.mkdir(mode=0o700, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".tar")
            os.unlink(name)  # the open fd keeps it until the caller is done
            try:
                tree.archive_to_fd(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd

        async with self.lock(sandbox_id):
            fd = await asyncio.to_thread(build, await self.tree(principal, sandbox_id))
            await self.touch(sandbox_id)
        return fd
