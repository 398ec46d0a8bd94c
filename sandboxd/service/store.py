"""Durable state in SQLite: tokens, sandboxes, snapshots, runs and the audit chain.

All database work runs on one dedicated thread (SQLite connections are not shared across
threads, and the event loop must never block); callers await it. This module owns the
connection, the schema and the transactions; the statements themselves are the named
functions of `sandboxd.service.queries` (`await store.call(queries.get_run, run_id)`), so
that no other module of the daemon holds SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sandboxd.models import AuditPage
from sandboxd.service import queries
from sandboxd.service.audit import AuditChain, Verdict

T = TypeVar("T")
P = ParamSpec("P")
SIDE_FILES = ("-wal", "-shm", "-journal")
VERDICT_TTL_S = 5.0  # how long a verdict of the audit chain answers for
log = logging.getLogger("sandboxd.service.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, scopes TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, uid INTEGER NOT NULL UNIQUE, spec TEXT NOT NULL,
    disk_mib INTEGER NOT NULL, created_at REAL NOT NULL, last_used_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX IF NOT EXISTS sandboxes_tenant ON sandboxes (tenant, state);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, sandbox_id TEXT NOT NULL, uid INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL, labels TEXT NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready', parent TEXT, ttl_s INTEGER, last_used_at REAL
);
CREATE INDEX IF NOT EXISTS snapshots_tenant ON snapshots (tenant);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, sandbox_id TEXT, status TEXT NOT NULL,
    request_digest TEXT NOT NULL, result TEXT, trace_id TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id);
CREATE INDEX IF NOT EXISTS runs_tenant ON runs (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS runs_trace ON runs (trace_id);
CREATE TABLE IF NOT EXISTS solves (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
    events INTEGER NOT NULL DEFAULT 0, event_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS solves_tenant ON solves (tenant, created_at);
CREATE TABLE IF NOT EXISTS solve_events (
    solve_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (solve_id, seq)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, tenant TEXT, token_id TEXT,
    action TEXT NOT NULL, target TEXT, request TEXT NOT NULL, result TEXT NOT NULL,
    trace_id TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
"""

#: Columns added since a table was first made: a state dir of an older daemon gains them.
ADDED_COLUMNS = {"snapshots": {"ttl_s": "INTEGER", "last_used_at": "REAL"}}


def _add_columns(db: sqlite3.Connection) -> None:
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class Store:
    """The daemon's SQLite database under the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.audit = AuditChain(path.parent / "audit.head")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandboxd-db")
        self._db: sqlite3.Connection | None = None
        self._verifying = asyncio.Lock()
        self._verdict: tuple[float, Verdict] | None = None

    def _open(self) -> None:
        # SQLite creates -wal and -shm with the database file's mode: so the file exists
        # 0600 before SQLite first opens it, and a state dir from before this is tightened.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for path in (self.path, *(self.path.with_name(self.path.name + x) for x in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                path.chmod(0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        _add_columns(db)
        self._db = db

    def sync(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run `fn(db, *args, **kw)` in one transaction, on the calling thread (for the CLI
        and start-up)."""
        if self._db is None:
            self._open()
        assert self._db is not None  # noqa: S101  # an invariant, for mypy: open() set it
        self._db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self._db, *args, **kw)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return out

    async def call(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run `fn(db, *args, **kw)` in one transaction on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self.sync(fn, *args, **kw)
        )

    def submit(self, what: str, fn: Callable[[], object]) -> asyncio.Future[object]:
        """Queue `fn` on the database thread without waiting for it: it runs before any work
        queued later (the thread takes jobs in order). A failure is logged; whoever needs
        the outcome awaits the returned future."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)

        def report(done: asyncio.Future[object]) -> None:
            if not done.cancelled() and (exc := done.exception()) is not None:
                log.error("database: %s failed: %r", what, exc)

        future.add_done_callback(report)
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- audit -------------------------------------------------------------------------------

    async def verify_audit(self) -> Verdict:
        """The chain's check (O(records), on the database thread): one at a time, and callers
        within VERDICT_TTL_S of the last share its verdict, so asking often cannot stall it."""
        async with self._verifying:
            now = time.monotonic()
            if self._verdict is not None and now - self._verdict[0] < VERDICT_TTL_S:
                return self._verdict[1]
            verdict = await self.call(self.audit.verify)
            self._verdict = (time.monotonic(), verdict)
            return verdict

    async def record(self, action: str, **fields: Any) -> None:
        """Append one record to the audit chain (fields as for `_audit_entry`); returns once it
        is committed. The head file follows on the database thread, before any later record
        (a crash in between leaves the head one record behind, which `verify` accepts)."""
        entry = self._audit_entry(action, **fields)
        seq, digest = await self.call(self.audit.append, entry)
        self.submit("audit head", lambda: self.audit.write_head(seq, digest))

    def record_sync(self, action: str, **fields: Any) -> None:
        """Append one record on the calling thread (the CLI's way)."""
        entry = self._audit_entry(action, **fields)
        seq, digest = self.sync(self.audit.append, entry)
        self.audit.write_head(seq, digest)  # after the commit: the head never runs ahead

    @staticmethod
    def _audit_entry(
        action: str,
        *,
        tenant: str | None,
        token_id: str | None,
        request: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        target: str | None = None,
        trace_id: str | None = None,
    ) -> dict[str, Any]:
        """One audit record's fields; its sequence number and hashes come with the append."""
        return {
            "time": round(time.time(), 6),
            "tenant": tenant,
            "token_id": token_id,
            "action": action,
            "target": target,
            "request": request or {},
            "result": result or {},
            "trace_id": trace_id,
        }

    async def audit_page(self, *, after: int, tenant: str | None, limit: int) -> AuditPage:
        """A page of the trail, oldest first (see `AuditChain.page`)."""
        return await self.call(self.audit.page, after, tenant, limit)

    # -- runs --------------------------------------------------------------------------------

    async def run_started(
        self,
        run_id: str,
        tenant: str,
        sandbox_id: str | None,
        digest: dict[str, Any],
        trace_id: str,
    ) -> None:
        await self.call(
            queries.insert_run, run_id, tenant, sandbox_id, digest, trace_id, time.time()
        )

    def run_finished(
        self, run_id: str, status: str, result_json: str | None
    ) -> asyncio.Future[object]:
        """Queued, not awaited by the caller in the common case: anything queued after it
        (the audit record of the request, a lookup of the run) sees it committed."""
        finished_at = time.time()
        return self.submit(
            f"recording the end of run {run_id}",
            lambda: self.sync(queries.finish_run, run_id, status, result_json, finished_at),
        )

    def mark_interrupted(self, db: sqlite3.Connection) -> list[queries.RunRow]:
        """Runs a dead daemon left 'running' become 'interrupted'; returns them."""
        return queries.interrupt_running(db, time.time())
