"""The wire models of snapshots refuse what the daemon must never see: bad label keys, NUL
bytes, too many labels, and a `from_snapshot` that is not a snapshot id (a path, say)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandboxd.models import SandboxCreate, SnapshotCreate


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
