"""The wire models of snapshots refuse what the daemon must never see: bad label keys, NUL
bytes, too many labels, and a `from_snapshot` that is not a snapshot id (a path, say); an
older daemon's snapshots table gains the columns of cache snapshots."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from sandboxd.models import SandboxCreate, SnapshotCreate
from sandboxd.service import queries
from sandboxd.service.snapshots import to_model
from sandboxd.service.store import Store


def test_labels_are_bounded() -> None:
    assert SnapshotCreate.model_validate({"labels": {"env": "py3.11", "a/b:c": ""}}).labels
    for labels in (
        {"bad key": "v"},
        {"": "v"},
        {"k" * 64: "v"},
        {"k": "v" * 257},
        {"k": "nul\x00"},
        {f"k{i}": "v" for i in range(33)},
    ):
        with pytest.raises(ValidationError):
            SnapshotCreate.model_validate({"labels": labels})


def test_from_snapshot_is_an_id() -> None:
    assert SandboxCreate(from_snapshot="snap_0123456789abcdef").from_snapshot
    assert SandboxCreate().from_snapshot is None
    for bad in ("../snap", "snap_0123", "snap_0123456789ABCDEF", "sbx_0123456789abcdef"):
        with pytest.raises(ValidationError):
            SandboxCreate(from_snapshot=bad)
    for ttl in (0, -1, "soon"):
        with pytest.raises(ValidationError):
            SnapshotCreate.model_validate({"ttl_s": ttl})


def test_a_state_dir_of_an_older_daemon_gains_the_cache_columns(tmp_path: Path) -> None:
    """The snapshots table of a daemon from before `ttl_s` gets its columns at open; its rows
    read as kept (no ttl), last used when they were made."""
    path = tmp_path / "sandboxd.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE snapshots (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, sandbox_id TEXT"
            " NOT NULL, uid INTEGER NOT NULL, size_bytes INTEGER NOT NULL, labels TEXT NOT NULL,"
            " created_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'ready', parent TEXT)"
        )
        db.execute(
            "INSERT INTO snapshots VALUES ('snap_0123456789abcdef', 't', 'sbx_1', 1000, 5,"
            " '{}', 100.0, 'ready', NULL)"
        )
    db.close()
    store = Store(path)
    try:
        (row,) = store.sync(queries.snapshots, None)
        assert (row.ttl_s, row.last_used_at) == (None, None)
        snap = to_model(row)
        assert snap.expires_at is None and snap.last_used_at == snap.created_at
        assert store.sync(queries.idle_cached_snapshots, None, None) == []
    finally:
        store.close()
