"""Persistent sandboxes: a workspace on its own ext4 image that outlives runs and restarts.

Each sandbox has a disk image of `disk_mib` (its quota, inodes capped too) under
`<state>/sandboxes/<id>/`, loop-mounted nosuid,nodev at `mnt/`; `mnt/work` (owned by the
sandbox's own unprivileged uid) is the `/workspace` of every run in it. Runs in one sandbox
go one at a time; each is still a fresh jail with a fresh /tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from sandboxd.backends.base import SandboxMount
from sandboxd.backends.host import linux
from sandboxd.backends.host.workspace import WorkTree
from sandboxd.errors import BackendUnavailable, InvalidRequest, NotFound, QuotaExceeded
from sandboxd.models import Limits, Sandbox, SandboxCreate
from sandboxd.service.auth import Principal
from sandboxd.service.policy import apply_caps, check_network
from sandboxd.service.runs import RunManager
from sandboxd.service.store import Store
from sandboxd.settings import UID_SPAN, Settings

log = logging.getLogger("sandboxd.service.sandboxes")
SANDBOX_UID_OFFSET = 50_000


async def _exec(*argv: str) -> None:
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

    def _make_work(self, uid: int) -> None:
        self.mnt.chmod(0o711)
        self.work.mkdir(mode=0o700)
        # A fresh directory on a fresh filesystem: nothing of the sandbox exists to follow.
        os.chown(self.work, uid, uid)

    async def create(self, disk_mib: int, uid: int) -> None:
        await asyncio.to_thread(self._make_image, disk_mib)
        inodes = str(max(1024, disk_mib * 128))
        await _exec(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-N",
            inodes,
            "-E",
            "root_owner=0:0",
            str(self.image),
        )
        await self.mount()
        await asyncio.to_thread(self._make_work, uid)

    async def mount(self) -> None:
        if not self.mnt.is_mount():
            await _exec("mount", "-o", "loop,nosuid,nodev,noatime", str(self.image), str(self.mnt))

    async def unmount(self) -> None:
        if self.mnt.is_mount():
            await asyncio.to_thread(linux.umount, self.mnt)

    async def destroy(self) -> None:
        await self.unmount()
        await asyncio.to_thread(shutil.rmtree, self.root, True)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _to_model(row: sqlite3.Row, default_backend: str = "nsjail") -> Sandbox:
    spec = SandboxCreate.model_validate_json(row["spec"])
    return Sandbox(
        id=row["id"],
        tenant=row["tenant"],
        language=spec.language,
        image=spec.image,
        backend=spec.backend or default_backend,
        limits=spec.limits,
        network=spec.network,
        ttl_s=spec.ttl_s,
        state=row["state"],
        created_at=_dt(row["created_at"]),
        last_used_at=_dt(row["last_used_at"]),
        expires_at=_dt(row["last_used_at"] + spec.ttl_s),
    )


class SandboxManager:
    """Creates, finds, runs in, expires and deletes persistent sandboxes."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.dir = settings.state_dir / "sandboxes"
        self.uid_base = settings.identity.uid_base + SANDBOX_UID_OFFSET
        self.uid_end = settings.identity.uid_base + UID_SPAN
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def disk(self, sandbox_id: str) -> SandboxDisk:
        return SandboxDisk(self.dir / sandbox_id)

    async def start(self) -> int:
        """Remount the disks of active sandboxes (after a crash or reboot); their count."""
        await asyncio.to_thread(self.dir.mkdir, 0o711, False, True)
        await asyncio.to_thread(self.dir.chmod, 0o711)
        await asyncio.to_thread(self._tighten_images)
        rows = await self.store.call(
            lambda db: db.execute("SELECT id FROM sandboxes WHERE state = 'active'").fetchall()
        )
        for row in rows:
            await self.disk(row["id"]).mount()
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

    async def count_active(self) -> int:
        row = await self.store.call(
            lambda db: db.execute("SELECT COUNT(*) FROM sandboxes WHERE state='active'").fetchone()
        )
        return int(row[0])

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

        def reserve(db: sqlite3.Connection) -> int:
            count, disk = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(disk_mib), 0) FROM sandboxes"
                " WHERE tenant = ? AND state = 'active'",
                (principal.tenant,),
            ).fetchone()
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
            used = {r[0] for r in db.execute("SELECT uid FROM sandboxes")}
            free = (u for u in range(self.uid_base, self.uid_end) if u not in used)
            uid = next(free, None)
            if uid is None:
                raise QuotaExceeded("this daemon holds as many sandboxes as it has uids")
            db.execute(
                "INSERT INTO sandboxes (id, tenant, uid, spec, disk_mib, created_at, last_used_at,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, 'creating')",
                (
                    sandbox_id,
                    principal.tenant,
                    uid,
                    spec.model_dump_json(),
                    spec.limits.disk_mib,
                    now,
                    now,
                ),
            )
            return uid

        uid = await self.store.call(reserve)
        disk = self.disk(sandbox_id)
        try:
            await disk.create(spec.limits.disk_mib, uid)
        except BaseException:
            await asyncio.shield(self._forget(sandbox_id, disk))
            raise
        await self.store.call(
            lambda db: db.execute(
                "UPDATE sandboxes SET state = 'active' WHERE id = ?", (sandbox_id,)
            )
        )
        return await self.get(principal, sandbox_id)

    async def _forget(self, sandbox_id: str, disk: SandboxDisk) -> None:
        with contextlib.suppress(OSError, BackendUnavailable):
            await disk.destroy()
        await self.store.call(
            lambda db: db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
        )

    async def _row(self, principal: Principal, sandbox_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = await self.store.call(
            lambda db: db.execute(
                "SELECT * FROM sandboxes WHERE id = ? AND state = 'active'", (sandbox_id,)
            ).fetchone()
        )
        # Another tenant's sandbox is "not found" too: existence does not leak.
        if row is None or row["tenant"] != principal.tenant:
            raise NotFound(f"no sandbox {sandbox_id!r}")
        return row

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        return _to_model(await self._row(principal, sandbox_id))

    async def list_for(self, principal: Principal) -> list[Sandbox]:
        rows = await self.store.call(
            lambda db: db.execute(
                "SELECT * FROM sandboxes WHERE tenant = ? AND state = 'active' ORDER BY created_at",
                (principal.tenant,),
            ).fetchall()
        )
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
        changed = await self.store.call(
            lambda db: (
                db.execute(
                    "UPDATE sandboxes SET state = ? WHERE id = ? AND state = 'active'",
                    (state, sandbox_id),
                ).rowcount
            )
        )
        if changed != 1:
            return False
        await self.disk(sandbox_id).destroy()
        self._locks.pop(sandbox_id, None)
        return True

    async def touch(self, sandbox_id: str) -> None:
        await self.store.call(
            lambda db: db.execute(
                "UPDATE sandboxes SET last_used_at = ? WHERE id = ?", (time.time(), sandbox_id)
            )
        )

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks[sandbox_id]

    async def mount_for(
        self, principal: Principal, sandbox_id: str
    ) -> tuple[Sandbox, SandboxMount]:
        row = await self._row(principal, sandbox_id)
        return _to_model(row), SandboxMount(self.disk(sandbox_id).work, row["uid"])

    async def tree(self, principal: Principal, sandbox_id: str) -> WorkTree:
        row = await self._row(principal, sandbox_id)
        uid = row["uid"]
        return WorkTree(self.disk(sandbox_id).work, uid=uid, gid=uid)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Delete sandboxes idle for longer than their ttl_s; (id, tenant) of each."""
        now = time.time()
        rows = await self.store.call(
            lambda db: db.execute("SELECT * FROM sandboxes WHERE state = 'active'").fetchall()
        )
        expired = []
        for row in rows:
            ttl = json.loads(row["spec"])["ttl_s"]
            if row["last_used_at"] + ttl > now or self._locks[row["id"]].locked():
                continue
            async with self._locks[row["id"]]:
                if await self._remove(row["id"], "expired"):
                    expired.append((row["id"], row["tenant"]))
        return expired

    @staticmethod
    def run_limits(sandbox: Sandbox, asked: Limits) -> Limits:
        """A run's limits: what it set, else the sandbox's defaults."""
        merged = sandbox.limits.model_dump()
        merged.update(asked.model_dump(include=asked.model_fields_set))
        return Limits.model_validate(merged)
