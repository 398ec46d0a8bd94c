"""Every SQL statement of the daemon, as named, typed functions per table.

Why one module: the schema (`sandboxd.service.store.SCHEMA`) and the statements that read and
write it change together, and nothing else in the daemon should know a column name or build a
query. Each function takes the connection of the caller's transaction first, so that
`Store.call(queries.get_run, run_id)` runs it on the database thread, and a caller that needs
several statements in one transaction passes a function that calls several of these. Rows come
back as small frozen dataclasses (or plain values), never as `sqlite3.Row`.

Every statement is a constant: values are bound as parameters, never formatted into SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from typing import Any

# -- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    id: str
    tenant: str
    sandbox_id: str | None
    status: str
    request_digest: str
    result: str | None
    trace_id: str
    created_at: float
    finished_at: float | None


def _run(row: sqlite3.Row) -> RunRow:
    return RunRow(**dict(row))


def insert_run(
    db: sqlite3.Connection,
    run_id: str,
    tenant: str,
    sandbox_id: str | None,
    digest: dict[str, Any],
    trace_id: str,
    created_at: float,
) -> None:
    db.execute(
        "INSERT INTO runs (id, tenant, sandbox_id, status, request_digest, trace_id,"
        " created_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
        (run_id, tenant, sandbox_id, json.dumps(digest), trace_id, created_at),
    )


def finish_run(
    db: sqlite3.Connection, run_id: str, status: str, result_json: str | None, finished_at: float
) -> None:
    db.execute(
        "UPDATE runs SET status = ?, result = ?, finished_at = ? WHERE id = ?",
        (status, result_json, finished_at, run_id),
    )


def get_run(db: sqlite3.Connection, run_id: str) -> RunRow | None:
    row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _run(row)


def interrupt_running(db: sqlite3.Connection, finished_at: float) -> list[RunRow]:
    """Runs left 'running' (by a daemon that died) become 'interrupted'; they, as they were."""
    rows = db.execute("SELECT * FROM runs WHERE status = 'running'").fetchall()
    db.execute(
        "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
        (finished_at,),
    )
    return [_run(r) for r in rows]


# -- sandboxes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxRow:
    id: str
    tenant: str
    uid: int
    spec: str  # the SandboxCreate it was made with, as JSON
    disk_mib: int
    created_at: float
    last_used_at: float
    state: str


def _sandbox(row: sqlite3.Row) -> SandboxRow:
    return SandboxRow(**dict(row))


def insert_sandbox(db: sqlite3.Connection, row: SandboxRow) -> None:
    db.execute(
        "INSERT INTO sandboxes (id, tenant, uid, spec, disk_mib, created_at, last_used_at,"
        " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.id,
            row.tenant,
            row.uid,
            row.spec,
            row.disk_mib,
            row.created_at,
            row.last_used_at,
            row.state,
        ),
    )


def tenant_usage(db: sqlite3.Connection, tenant: str) -> tuple[int, int]:
    """The number of a tenant's active sandboxes and the MiB of disk they hold."""
    count, disk = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(disk_mib), 0) FROM sandboxes"
        " WHERE tenant = ? AND state = 'active'",
        (tenant,),
    ).fetchone()
    return int(count), int(disk)


def used_uids(db: sqlite3.Connection) -> set[int]:
    """Uids held by any sandbox row, whatever its state (a uid is never handed out twice)."""
    return {int(r[0]) for r in db.execute("SELECT uid FROM sandboxes")}


def activate_sandbox(db: sqlite3.Connection, sandbox_id: str) -> None:
    db.execute("UPDATE sandboxes SET state = 'active' WHERE id = ?", (sandbox_id,))


def retire_sandbox(db: sqlite3.Connection, sandbox_id: str, state: str) -> bool:
    """Mark an active sandbox `state` (deleted, expired); False if it was no longer active."""
    cur = db.execute(
        "UPDATE sandboxes SET state = ? WHERE id = ? AND state = 'active'", (state, sandbox_id)
    )
    return cur.rowcount == 1


def delete_sandbox(db: sqlite3.Connection, sandbox_id: str) -> None:
    db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))


def touch_sandbox(db: sqlite3.Connection, sandbox_id: str, used_at: float) -> None:
    db.execute("UPDATE sandboxes SET last_used_at = ? WHERE id = ?", (used_at, sandbox_id))


def active_sandbox(db: sqlite3.Connection, sandbox_id: str) -> SandboxRow | None:
    row = db.execute(
        "SELECT * FROM sandboxes WHERE id = ? AND state = 'active'", (sandbox_id,)
    ).fetchone()
    return None if row is None else _sandbox(row)


def active_sandboxes(db: sqlite3.Connection) -> list[SandboxRow]:
    rows = db.execute("SELECT * FROM sandboxes WHERE state = 'active'").fetchall()
    return [_sandbox(r) for r in rows]


def tenant_sandboxes(db: sqlite3.Connection, tenant: str) -> list[SandboxRow]:
    rows = db.execute(
        "SELECT * FROM sandboxes WHERE tenant = ? AND state = 'active' ORDER BY created_at",
        (tenant,),
    ).fetchall()
    return [_sandbox(r) for r in rows]


def count_active_sandboxes(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM sandboxes WHERE state='active'").fetchone()[0])


def forks_of(db: sqlite3.Connection, snapshot_id: str, *, deep: bool = False) -> list[str]:
    """Ids of the sandboxes started from a snapshot that still exist (or are being made);
    `deep`: from it or from any snapshot taken of a fork of it (they all use its image)."""
    rows = db.execute(
        "WITH RECURSIVE tree(id) AS (SELECT ?1 UNION"
        " SELECT s.id FROM snapshots s JOIN tree ON s.parent = tree.id WHERE ?2)"
        " SELECT id FROM sandboxes WHERE json_extract(spec, '$.from_snapshot') IN tree"
        " AND state IN ('active', 'creating') ORDER BY created_at",
        (snapshot_id, deep),
    )
    return [str(r[0]) for r in rows]


# -- snapshots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRow:
    id: str
    tenant: str
    sandbox_id: str
    uid: int  # the source sandbox's: the owner of the snapshot's files on disk
    size_bytes: int
    labels: str  # JSON object
    created_at: float
    state: str  # creating | ready
    parent: str | None = None  # taken of a fork of this snapshot: its layer sits above it
    ttl_s: int | None = None  # a cache: expires this long after its last use, evictable
    last_used_at: float | None = None  # created, or a fork of it (or above it) made or gone


def _snapshot(row: sqlite3.Row) -> SnapshotRow:
    return SnapshotRow(**dict(row))


def insert_snapshot(db: sqlite3.Connection, row: SnapshotRow) -> None:
    db.execute(
        "INSERT INTO snapshots (id, tenant, sandbox_id, uid, size_bytes, labels, created_at,"
        " state, parent, ttl_s, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        astuple(row),  # the columns, in the dataclass's order
    )


def snapshot_chain(db: sqlite3.Connection, snapshot_id: str) -> list[SnapshotRow]:
    """The snapshot and those below it (its parent, the parent's, ...), top first."""
    chain: list[SnapshotRow] = []
    row = get_snapshot(db, snapshot_id)
    while row is not None:
        chain.append(row)
        row = get_snapshot(db, row.parent) if row.parent else None
    return chain


def children_of(db: sqlite3.Connection, snapshot_id: str) -> list[str]:
    """Snapshots taken of forks of this one (they need its image)."""
    rows = db.execute(
        "SELECT id FROM snapshots WHERE parent = ? ORDER BY created_at", (snapshot_id,)
    )
    return [str(r[0]) for r in rows]


def snapshot_usage(db: sqlite3.Connection, tenant: str) -> int:
    """MiB of disk a tenant's snapshots hold (each rounded up), those being made included."""
    (mib,) = db.execute(
        "SELECT COALESCE(SUM((size_bytes + 1048575) / 1048576), 0) FROM snapshots WHERE tenant = ?",
        (tenant,),
    ).fetchone()
    return int(mib)


def finish_snapshot(db: sqlite3.Connection, snapshot_id: str, size_bytes: int) -> None:
    db.execute(
        "UPDATE snapshots SET state = 'ready', size_bytes = ? WHERE id = ?",
        (size_bytes, snapshot_id),
    )


def get_snapshot(db: sqlite3.Connection, snapshot_id: str) -> SnapshotRow | None:
    row = db.execute(
        "SELECT * FROM snapshots WHERE id = ? AND state = 'ready'", (snapshot_id,)
    ).fetchone()
    return None if row is None else _snapshot(row)


def snapshots(db: sqlite3.Connection, tenant: str | None) -> list[SnapshotRow]:
    """Ready snapshots (of `tenant`, if given), oldest first."""
    rows = db.execute(
        "SELECT * FROM snapshots WHERE state = 'ready' AND (?1 IS NULL OR tenant = ?1)"
        " ORDER BY created_at",
        (tenant,),
    )
    return [_snapshot(r) for r in rows]


def unfinished_snapshots(db: sqlite3.Connection) -> list[str]:
    """Snapshots a dead daemon left half made: their rows go; their ids, to clean up."""
    ids = [str(r[0]) for r in db.execute("SELECT id FROM snapshots WHERE state != 'ready'")]
    db.execute("DELETE FROM snapshots WHERE state != 'ready'")
    return ids


def delete_snapshot(db: sqlite3.Connection, snapshot_id: str) -> None:
    db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))


def touch_snapshot_chain(db: sqlite3.Connection, snapshot_id: str, now: float) -> None:
    """A fork of the snapshot was made or is gone: it and those below it were used now."""
    for row in snapshot_chain(db, snapshot_id):
        db.execute("UPDATE snapshots SET last_used_at = ? WHERE id = ?", (now, row.id))


def snapshot_users(db: sqlite3.Connection, snapshot_id: str) -> list[str]:
    """What keeps a snapshot: the sandboxes started from it and the snapshots above it."""
    return forks_of(db, snapshot_id) + children_of(db, snapshot_id)


def idle_cached_snapshots(
    db: sqlite3.Connection, tenant: str | None, expired_by: float | None
) -> list[SnapshotRow]:
    """Ready snapshots with a ttl_s (of `tenant`, if given) that nothing uses, least recently
    used first; with `expired_by`, only those whose ttl_s had run out by then."""
    rows = db.execute(
        "SELECT * FROM snapshots s WHERE state = 'ready' AND ttl_s IS NOT NULL"
        " AND (?1 IS NULL OR tenant = ?1)"
        " AND (?2 IS NULL OR COALESCE(last_used_at, created_at) + ttl_s <= ?2)"
        " AND NOT EXISTS (SELECT 1 FROM snapshots c WHERE c.parent = s.id)"
        " AND NOT EXISTS (SELECT 1 FROM sandboxes b WHERE b.state IN ('active', 'creating')"
        "  AND json_extract(b.spec, '$.from_snapshot') = s.id)"
        " ORDER BY COALESCE(last_used_at, created_at), created_at",
        (tenant, expired_by),
    )
    return [_snapshot(r) for r in rows]


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    id: str
    tenant: str
    scopes: list[str]
    name: str
    created_at: float
    revoked_at: float | None


def _token(row: sqlite3.Row) -> TokenRow:
    return TokenRow(
        id=row["id"],
        tenant=row["tenant"],
        scopes=json.loads(row["scopes"]),
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def insert_token(
    db: sqlite3.Connection,
    token_id: str,
    tenant: str,
    scopes: list[str],
    token_hash: str,
    name: str,
    created_at: float,
) -> None:
    db.execute(
        "INSERT INTO tokens (id, tenant, scopes, hash, name, created_at) VALUES (?,?,?,?,?,?)",
        (token_id, tenant, json.dumps(scopes), token_hash, name, created_at),
    )


def tokens(db: sqlite3.Connection, tenant: str | None = None) -> list[TokenRow]:
    """Every token (of `tenant`, if given), oldest first."""
    rows = db.execute(
        "SELECT * FROM tokens WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at", (tenant,)
    )
    return [_token(r) for r in rows]


def token_by_hash(db: sqlite3.Connection, token_hash: str) -> TokenRow | None:
    row = db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
    return None if row is None else _token(row)


def revoke_token(db: sqlite3.Connection, token_id: str, revoked_at: float) -> bool:
    """Revoke a token not yet revoked; False if there is none such."""
    cur = db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (revoked_at, token_id),
    )
    return cur.rowcount == 1


# -- audit -----------------------------------------------------------------------------------


def _audit(row: sqlite3.Row) -> dict[str, Any]:
    """An audit row as a record: its request and result decoded from their JSON."""
    rec = dict(row)
    rec["request"] = json.loads(rec["request"])
    rec["result"] = json.loads(rec["result"])
    return rec


def audit_head(db: sqlite3.Connection) -> tuple[int, str] | None:
    """Sequence number and hash of the last record, if any."""
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return None if last is None else (int(last["seq"]), str(last["hash"]))


def insert_audit(db: sqlite3.Connection, record: dict[str, Any], prev: str, digest: str) -> None:
    """Append `record` (with its `seq`), chained to `prev` and hashed to `digest`."""
    db.execute(
        "INSERT INTO audit (seq, time, tenant, token_id, action, target, request, result,"
        " trace_id, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record["seq"],
            record["time"],
            record["tenant"],
            record["token_id"],
            record["action"],
            record["target"],
            json.dumps(record["request"], sort_keys=True),
            json.dumps(record["result"], sort_keys=True),
            record["trace_id"],
            prev,
            digest,
        ),
    )


def audit_records(db: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    """Every record, in sequence order (read lazily: the trail can be long)."""
    for row in db.execute("SELECT * FROM audit ORDER BY seq"):
        yield _audit(row)


def audit_page(
    db: sqlite3.Connection, after: int, tenant: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` records after sequence number `after` (of `tenant` only, if given)."""
    rows = db.execute(
        "SELECT * FROM audit WHERE seq > ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY seq LIMIT ?3",
        (after, tenant, limit),
    ).fetchall()
    return [_audit(r) for r in rows]


# -- the run list and the overview -----------------------------------------------------------


def run_page(
    db: sqlite3.Connection,
    *,
    tenant: str | None,
    status: str | None,
    language: str | None,
    backend: str | None,
    trace_id: str | None,
    after: str | None,
    limit: int,
) -> list[RunRow]:
    """Runs newest first (of `tenant`, if given; filtered), those older than run `after`."""
    rows = db.execute(
        "SELECT * FROM runs WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR status = ?2)"
        " AND (?3 IS NULL OR json_extract(request_digest, '$.language') = ?3)"
        " AND (?4 IS NULL OR json_extract(result, '$.backend') = ?4)"
        " AND (?7 IS NULL OR trace_id = ?7)"
        " AND (?5 IS NULL OR (created_at, id) < (SELECT created_at, id FROM runs WHERE id = ?5))"
        " ORDER BY created_at DESC, id DESC LIMIT ?6",
        (tenant, status, language, backend, after, limit, trace_id),
    ).fetchall()
    return [_run(r) for r in rows]


def runs_since(db: sqlite3.Connection, since: float) -> list[tuple[str, float, float | None]]:
    """(status, created_at, finished_at) of every run started since `since`."""
    rows = db.execute(
        "SELECT status, created_at, finished_at FROM runs WHERE created_at >= ?", (since,)
    )
    return [(str(r[0]), float(r[1]), r[2]) for r in rows]


# -- solves ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveRow:
    id: str
    tenant: str
    spec: str  # the SolveCreate, as JSON
    status: str
    events: int
    event_bytes: int
    created_at: float
    updated_at: float


def _solve(row: sqlite3.Row) -> SolveRow:
    return SolveRow(**dict(row))


def insert_solve(db: sqlite3.Connection, row: SolveRow) -> None:
    db.execute(
        "INSERT INTO solves (id, tenant, spec, status, events, event_bytes, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        astuple(row),
    )


def count_solves(db: sqlite3.Connection, tenant: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM solves WHERE tenant = ?", (tenant,)).fetchone()[0])


def oldest_ended_solves(db: sqlite3.Connection, tenant: str, limit: int) -> list[str]:
    rows = db.execute(
        "SELECT id FROM solves WHERE tenant = ? AND status != 'running'"
        " ORDER BY created_at, id LIMIT ?",
        (tenant, limit),
    )
    return [str(r[0]) for r in rows]


def delete_solves(db: sqlite3.Connection, solve_ids: list[str]) -> None:
    for table, column in (("solve_events", "solve_id"), ("solves", "id")):
        db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in solve_ids])  # noqa: S608  # fixed names


def get_solve(db: sqlite3.Connection, solve_id: str) -> SolveRow | None:
    row = db.execute("SELECT * FROM solves WHERE id = ?", (solve_id,)).fetchone()
    return None if row is None else _solve(row)


def solve_page(
    db: sqlite3.Connection, tenant: str | None, after: str | None, limit: int
) -> list[SolveRow]:
    """Solves newest first (of `tenant`, if given), those older than solve `after`."""
    rows = db.execute(
        "SELECT * FROM solves WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR"
        " (created_at, id) < (SELECT created_at, id FROM solves WHERE id = ?2))"
        " ORDER BY created_at DESC, id DESC LIMIT ?3",
        (tenant, after, limit),
    )
    return [_solve(r) for r in rows]


def append_solve_events(
    db: sqlite3.Connection,
    solve_id: str,
    events: list[str],
    added_bytes: int,
    status: str | None,
    now: float,
) -> int:
    """Append events (JSON each) after the solve's last; set its status if given. The count."""
    first = int(db.execute("SELECT events FROM solves WHERE id = ?", (solve_id,)).fetchone()[0])
    db.executemany(
        "INSERT INTO solve_events (solve_id, seq, time, event) VALUES (?, ?, ?, ?)",
        [(solve_id, first + i + 1, now, e) for i, e in enumerate(events)],
    )
    db.execute(
        "UPDATE solves SET events = events + ?, event_bytes = event_bytes + ?,"
        " status = COALESCE(?, status), updated_at = ? WHERE id = ?",
        (len(events), added_bytes, status, now, solve_id),
    )
    return first + len(events)


def solve_events(db: sqlite3.Connection, solve_id: str) -> list[tuple[int, float, str]]:
    rows = db.execute(
        "SELECT seq, time, event FROM solve_events WHERE solve_id = ? ORDER BY seq", (solve_id,)
    )
    return [(int(r[0]), float(r[1]), str(r[2])) for r in rows]
