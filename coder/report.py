"""Reporting a solve to the sandboxd it uses, for the Studio's Solves page (`/ui/solves`).

A listener on the trace (`TraceWriter.listeners`): each trace event that a person watching
the solve cares about becomes a wire event (`sandboxd.models`: tests, edits, model calls,
verdicts, the end with the final patch) sent in order to `POST /v1/solves/{id}/events`.
Best-effort: a daemon that cannot be reached, or refuses, is named once on stderr and the
solve goes on; the JSONL trace is written either way. Sending happens on a task of its own,
so a slow daemon never holds up the loop; `close` waits a bounded time for what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coder.agents import ROLES
from coder.config import CoderConfig
from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.models import (
    EditsEvent,
    EndEvent,
    ModelEvent,
    NoteEvent,
    ReviewEvent,
    RoleUsage,
    SolveCreate,
    SolveEvents,
    TestsEvent,
)

BATCH = 100
CLOSE_S = 10.0
MAX_PATCH = 1_048_576
MAX_NAME = 256
Event = TestsEvent | EditsEvent | ModelEvent | ReviewEvent | NoteEvent | EndEvent


def _short(text: object, limit: int = MAX_NAME) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _count(value: object) -> int:
    return len(value) if isinstance(value, list) else int(value or 0)  # type: ignore[call-overload]


def _points(points: object) -> list[str]:
    """The reviewer's points: a list, or its reply's text with one point a line."""
    if isinstance(points, list):
        return [str(p) for p in points]
    lines = str(points or "").splitlines()
    return [text for line in lines if (text := line.strip().removeprefix("- ").strip())]


def _patch(diff: str) -> str:
    if len(diff) <= MAX_PATCH:
        return diff
    return diff[: MAX_PATCH - 64] + "\n[patch cut: larger than the daemon keeps]\n"


class SolveReporter:
    """Turns trace events into solve events and sends them (see the module's doc)."""

    def __init__(self, cfg: CoderConfig, trace_id: str) -> None:
        self.spec = SolveCreate(
            task=_short(cfg.task, 65536),
            repo=_short(Path(cfg.repo).resolve().name or "repo"),
            test_command=_short(cfg.test, 65536),
            models={r.name: _short(r.model_name(cfg)) for r in ROLES},
            budgets={
                "max_iterations": cfg.max_iterations,
                "max_tokens": cfg.max_tokens,
                "max_cost_usd": cfg.max_cost_usd,
                "max_wall_s": cfg.max_wall_s,
            },
            trace_id=trace_id,
        )
        #: The whole change so far (the solver's diff), set once the solver exists.
        self.patch: Callable[[], str] = str
        self.solve_id: str | None = None
        self.round = 0
        self._pending: list[Event] = []
        self._client: Client | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False

    # -- the listener ----------------------------------------------------------------------

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if self._failed:
            return
        try:
            event = self._translate(kind, data)
        except (ValueError, TypeError) as exc:  # a trace field this does not expect
            event = NoteEvent(kind="note", text=_short(f"{kind}: not reported ({exc})", 1000))
        if event is not None:
            self._pending.append(event)
            self._wake.set()

    def _translate(self, kind: str, data: dict[str, Any]) -> Event | None:
        if kind == "model.request":
            self.round = int(data.get("iteration", self.round))
        elif kind == "tests.run":
            self.round = int(data.get("iteration", self.round))
            return TestsEvent(
                kind="tests",
                round=self.round,
                passed=bool(data.get("passed")),
                exit_code=data.get("exit_code"),
                summary=_short(data.get("summary") or "", 65536),
                failing=[_short(f) for f in (data.get("failing") or [])][:1000],
                seconds=float(data.get("seconds") or 0.0),
                patch=_patch(self.patch()) if self.round else None,
            )
        elif kind == "model.reply":
            usage = data.get("usage") or {}
            return ModelEvent(
                kind="model",
                round=self.round,
                role=_short(data.get("agent", "")),
                model=_short(data.get("model", "")),
                usage=RoleUsage(
                    calls=1,
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    cost_usd=float(usage.get("cost_usd", 0.0)),
                ),
                cached=bool(data.get("cached")),
            )
        elif kind == "edits.applied":
            return EditsEvent(
                kind="edits",
                round=max(1, int(data.get("iteration", self.round))),
                files=[_short(f) for f in (data.get("files") or [])][:1000],
                applied=_count(data.get("applied")),
                not_applied=_count(data.get("failed")) + _count(data.get("refused")),
            )
        elif kind == "review.verdict":
            return ReviewEvent(
                kind="review",
                round=max(1, int(data.get("iteration", self.round))),
                verdict="APPROVE" if data.get("verdict") == "APPROVE" else "REVISE",
                points=[_short(p, 65536) for p in _points(data.get("points"))][:100],
            )
        elif kind == "sandbox.ready":
            sandbox_id = _short(data.get("sandbox_id", ""), 64)
            return NoteEvent(kind="note", text="sandbox ready", sandbox_id=sandbox_id)
        elif kind in ("setup.done", "preflight") and not data.get("ok", True):
            return NoteEvent(kind="note", text=_short(f"{kind}: {data.get('reason')}", 65536))
        elif kind == "solve.end":
            return self._end(data.get("result") or {})
        return None

    def _end(self, result: dict[str, Any]) -> EndEvent:
        usage = {}
        for role in ROLES:
            spent = result.get(role.name) or {}
            usage[role.name] = RoleUsage(
                calls=int(spent.get("calls", 0)),
                prompt_tokens=int(spent.get("prompt_tokens", 0)),
                completion_tokens=int(spent.get("completion_tokens", 0)),
                cost_usd=float(spent.get("cost_usd", 0.0)),
            )
        return EndEvent(
            kind="end",
            status=_short(result.get("status", "coder_error")),
            reason=_short(result.get("reason", ""), 65536),
            rounds=int(result.get("iterations", 0)),
            patch=_patch(self.patch()),
            usage=usage,
            wall_time_s=float(result.get("wall_time_s", 0.0)),
        )

    # -- sending ---------------------------------------------------------------------------

    def attach(self, client: Client) -> None:
        """Report to the daemon `client` talks to (a client of its own: the solve's closes
        before its last event)."""
        own = Client(client.url, token=client.token, traceparent=client.traceparent)
        self._client = own
        self._task = asyncio.get_running_loop().create_task(self._send_all(own))

    def _give_up(self, why: str) -> None:
        self._failed = True
        self._pending.clear()
        url = self._client.url if self._client else "?"
        print(
            f"coder: [report] not reporting this solve to sandboxd at {url}: {why}; "
            "the solve goes on (its trace is still written)",
            file=sys.stderr,
            flush=True,
        )

    async def _send_all(self, client: Client) -> None:
        while not self._failed:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[:BATCH]
            try:
                if self.solve_id is None:
                    self.solve_id = (await client.create_solve(self.spec)).id
                await client.add_solve_events(self.solve_id, SolveEvents(events=batch))
            except SandboxdError as exc:
                self._give_up(exc.message)
                return
            del self._pending[: len(batch)]

    async def close(self) -> None:
        """Send what is left (waiting at most CLOSE_S), then let go of the daemon."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                if not self._failed:
                    self._give_up(f"the daemon took more than {CLOSE_S:.0f}s to take the rest")
        if self._client is not None:
            await self._client.close()
