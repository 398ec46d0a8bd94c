"""The audit trail: an append-only chain in which every record carries the previous one's hash.

A record's hash is SHA-256 over the previous hash and the record's canonical JSON, so editing,
deleting or reordering any record breaks the chain from there on. The head (sequence number and
hash of the last record) is also written to a file beside the database after each commit, so
that cutting records off the end is detected too: the chain must reach the head, and the record
at the head's position must carry the head's hash (a crash between the commit and the head write
leaves the head one record behind, which is accepted).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxd.models import AuditPage, AuditRecord
from sandboxd.service import queries

GENESIS = "0" * 64
FIELDS = ("seq", "time", "tenant", "token_id", "action", "target", "request", "result", "trace_id")


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(
        {k: record[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )


def chain_hash(prev_hash: str, record: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(record)).encode()).hexdigest()


@dataclass
class Verdict:
    ok: bool
    records: int
    problem: str | None = None
    seq: int | None = None


class AuditChain:
    """Appends to and verifies the `audit` table; keeps the head file in step."""

    def __init__(self, head_file: Path) -> None:
        self.head_file = head_file

    def write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{seq} {digest}\n")
        os.replace(tmp, self.head_file)

    def read_head(self) -> tuple[int, str] | None:
        try:
            seq, digest = self.head_file.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return int(seq), digest

    def append(self, db: sqlite3.Connection, entry: dict[str, Any]) -> tuple[int, str]:
        """Insert the next record (in the caller's transaction); its sequence number and hash."""
        last = queries.audit_head(db)
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        record = {**entry, "seq": seq}
        digest = chain_hash(prev, record)
        queries.insert_audit(db, record, prev, digest)
        return seq, digest

    @staticmethod
    def page(db: sqlite3.Connection, after: int, tenant: str | None, limit: int) -> AuditPage:
        """Up to `limit` records after `after` (of `tenant`, if given), and where the next
        page starts (None when this one is not full)."""
        rows = queries.audit_page(db, after, tenant, limit)
        records = [AuditRecord.model_validate(r) for r in rows]
        return AuditPage(
            records=records, next_after=records[-1].seq if len(records) == limit else None
        )

    def verify(self, db: sqlite3.Connection) -> Verdict:
        prev, expected_seq, count = GENESIS, 1, 0
        head = self.read_head()  # the head is written on this thread too: it cannot move now
        at_head: str | None = None  # the hash of the record the head names (not every hash)
        for rec in queries.audit_records(db):
            if rec["seq"] != expected_seq:
                return Verdict(False, count, f"record {expected_seq} is missing", expected_seq)
            if rec["prev_hash"] != prev:
                return Verdict(
                    False,
                    count,
                    "chain broken: a record before it was changed, removed or moved",
                    rec["seq"],
                )
            if chain_hash(prev, rec) != rec["hash"]:
                return Verdict(False, count, "record content does not match its hash", rec["seq"])
            prev, expected_seq, count = rec["hash"], expected_seq + 1, count + 1
            if head is not None and rec["seq"] == head[0]:
                at_head = rec["hash"]
        if head is None:
            if count:
                return Verdict(False, count, "the head file is missing")
            return Verdict(True, 0)
        head_seq, head_hash = head
        if head_seq > count:
            return Verdict(
                False,
                count,
                f"the head says the chain reaches record {head_seq}, but "
                f"the table ends at {count}: records were cut off",
                head_seq,
            )
        if at_head != head_hash:
            return Verdict(False, count, "the head's hash does not match its record", head_seq)
        return Verdict(True, count)
