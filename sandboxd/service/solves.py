"""Solves: what coder reports of each `coder solve` it runs through this daemon (its rounds,
test results, verdicts and costs), kept for the Studio to show, tenant by tenant.

coder appends events as the solve goes; the daemon validates each (`sandboxd.models`), keeps
them in order, caps what one solve may hold (a reporter gone wrong must not fill the disk),
and refuses anything after the `end` event. A refused append appends nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from datetime import UTC, datetime

from pydantic import TypeAdapter

from sandboxd.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, QuotaExceeded
from sandboxd.models import (
    RecordedEvent,
    Solve,
    SolveCreate,
    SolveEvent,
    SolveEvents,
    SolveList,
    SolveSummary,
)
from sandboxd.service import queries
from sandboxd.service.auth import Principal
from sandboxd.service.store import Store
from sandboxd.settings import Settings

MAX_EVENTS = 5000
MAX_EVENT_BYTES = 16 * 1024 * 1024
EVENT = TypeAdapter(SolveEvent)


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _summary(row: queries.SolveRow) -> SolveSummary:
    spec = SolveCreate.model_validate_json(row.spec)
    return SolveSummary(
        id=row.id,
        tenant=row.tenant,
        status=row.status,
        task=spec.task,
        repo=spec.repo,
        test_command=spec.test_command,
        models=spec.models,
        budgets=spec.budgets,
        trace_id=spec.trace_id,
        events=row.events,
        created_at=_time(row.created_at),
        updated_at=_time(row.updated_at),
    )


def _visible(row: queries.SolveRow | None, principal: Principal) -> bool:
    return row is not None and (row.tenant == principal.tenant or principal.can("admin"))


class SolveBook:
    """The solves of every tenant, in the daemon's store."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def create(self, principal: Principal, spec: SolveCreate) -> SolveSummary:
        """Record a new solve; over the tenant's `max_solves`, its oldest ended ones go (429
        when every one it keeps is still running)."""
        keep = self.settings.quota_for(principal.tenant).max_solves
        now = time.time()
        row = queries.SolveRow(
            id="slv_" + secrets.token_hex(8),
            tenant=principal.tenant,
            spec=spec.model_dump_json(),
            status="running",
            events=0,
            event_bytes=0,
            created_at=now,
            updated_at=now,
        )

        def insert(db: sqlite3.Connection) -> None:
            over = queries.count_solves(db, principal.tenant) + 1 - keep
            if over > 0:
                ended = queries.oldest_ended_solves(db, principal.tenant, over)
                if len(ended) < over:
                    raise QuotaExceeded(
                        f"tenant {principal.tenant!r} keeps {keep} solves and they are all "
                        "running; end one first",
                        field="max_solves",
                    )
                queries.delete_solves(db, ended)
            queries.insert_solve(db, row)

        await self.store.call(insert)
        return _summary(row)

    async def append(self, principal: Principal, solve_id: str, body: SolveEvents) -> int:
        """Append the events in one transaction: all of them, or none (over a cap, after the
        end, or another tenant's solve)."""
        encoded = [EVENT.dump_json(e).decode() for e in body.events]
        size = sum(len(e) for e in encoded)
        ends = [e for e in body.events if e.kind == "end"]
        if (ends and body.events[-1].kind != "end") or len(ends) > 1:
            raise InvalidRequest("the `end` event must be the last one", field="events")
        status = ends[0].status if ends else None

        def append(db: sqlite3.Connection) -> int:
            row = queries.get_solve(db, solve_id)
            # Its own tenant only, admin too: another tenant's timeline is read, never written.
            if row is None or row.tenant != principal.tenant:
                raise NotFound(f"no solve {solve_id!r}")
            if row.status != "running":
                raise Conflict(f"solve {solve_id} has ended ({row.status}); nothing is added")
            if row.events + len(encoded) > MAX_EVENTS:
                raise PayloadTooLarge(f"a solve holds at most {MAX_EVENTS} events", field="events")
            if row.event_bytes + size > MAX_EVENT_BYTES:
                raise PayloadTooLarge(
                    f"a solve holds at most {MAX_EVENT_BYTES} bytes of events", field="events"
                )
            return queries.append_solve_events(db, solve_id, encoded, size, status, time.time())

        return await self.store.call(append)

    async def list_for(
        self, principal: Principal, tenant: str | None, after: str | None, limit: int
    ) -> SolveList:
        rows = await self.store.call(queries.solve_page, tenant, after, limit)
        return SolveList(
            solves=[_summary(r) for r in rows],
            next_after=rows[-1].id if len(rows) == limit else None,
        )

    async def get(self, principal: Principal, solve_id: str) -> Solve:
        def read(
            db: sqlite3.Connection,
        ) -> tuple[queries.SolveRow | None, list[tuple[int, float, str]]]:
            row = queries.get_solve(db, solve_id)
            return row, queries.solve_events(db, solve_id) if _visible(row, principal) else []

        row, events = await self.store.call(read)
        if row is None or not _visible(row, principal):
            raise NotFound(f"no solve {solve_id!r}")

        def build() -> Solve:  # up to MAX_EVENT_BYTES to validate: off the event loop
            timeline = [
                RecordedEvent(seq=seq, time=at, event=EVENT.validate_json(raw))
                for seq, at, raw in events
            ]
            return Solve(**_summary(row).model_dump(), timeline=timeline)

        return await asyncio.to_thread(build)
