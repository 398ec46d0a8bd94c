"""The trace: one JSON line per typed event, each with the solve's trace id, flushed as written
(so a killed solve leaves every event up to its death). `replies` reads back the model replies
for `coder replay` and `coder resume`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from coder.errors import UsageError
from coder.model import Reply, Usage

EVENT_TYPES = (
    "solve.start",
    "env.plan",
    "env.fork_failed",
    "env.kept",
    "env.snapshot_failed",
    "sandbox.ready",
    "setup.step",
    "setup.done",
    "preflight",
    "tests.run",
    "model.request",
    "model.reply",
    "model.retry",
    "edits.applied",
    "writer.requests",
    "review.verdict",
    "reply.invalid",
    "candidates.start",
    "candidate.start",
    "candidate.end",
    "candidates.selected",
    "solve.end",
)


class TraceWriter:
    def __init__(self, path: Path, trace_id: str, *, append: bool = False) -> None:
        self.path = path
        self.trace_id = trace_id
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        #: Called with each event after it is written (coder's progress lines).
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        #: Fields every event of this writer carries (a candidate's number).
        self.tags: dict[str, Any] = {}

    def tagged(self, **tags: Any) -> TraceWriter:
        """A writer into the same trace whose events also carry `tags` (e.g. `candidate=2`),
        with the same listeners; closing the original closes it."""
        child = TraceWriter.__new__(TraceWriter)
        child.path, child.trace_id, child._fh = self.path, self.trace_id, self._fh
        child.listeners = self.listeners
        child.tags = {**self.tags, **tags}
        return child

    def event(self, kind: str, **data: Any) -> None:
        assert kind in EVENT_TYPES, kind
        data = {**self.tags, **data}
        line = {"time": round(time.time(), 6), "trace_id": self.trace_id, "type": kind, **data}
        self._fh.write(json.dumps(line, sort_keys=True) + "\n")
        self._fh.flush()
        for listener in self.listeners:
            listener(kind, data)

    def close(self) -> None:
        self._fh.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror}") from exc
    events = []
    for n, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except ValueError:
            if n == len(lines):  # a line cut short by a kill: ignore it
                break
            raise UsageError(f"trace {path} line {n} is not JSON") from None
    if not events or events[0].get("type") != "solve.start":
        raise UsageError(f"{path} is not a coder trace (no solve.start)")
    return events


def replies(events: list[dict[str, Any]], agent: str, candidate: int | None = None) -> list[Reply]:
    """The recorded replies of `agent`, in order (of `candidate`'s loop, with candidates)."""
    out = []
    for e in events:
        if e["type"] == "model.reply" and e["agent"] == agent and e.get("candidate") == candidate:
            usage = Usage(**e["usage"])
            out.append(Reply(e["text"], usage, e["model"], cached=e.get("cached", False)))
    return out
