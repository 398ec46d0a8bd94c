"""Progress on stderr while a solve works: one plain line per event of the trace.

A solve can take minutes (model calls, test runs), and without this it is silent all along.
The lines are derived from the trace events, so what a user watches and what the trace records
cannot drift apart. They go to stderr only: stdout stays the diff or the `--json` result, which
scripts read. Plain lines rather than a live display: they read the same in a terminal, a CI log
or a file, and need no dependency. `--quiet` turns them off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from coder.agents import Writer


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Progress:
    """Turns trace events into lines `coder: [phase] ...` on a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.tokens = 0
        self.cost_usd = 0.0
        self.iteration = 0
        #: The candidate the event being told is of (with --candidates), else None.
        self.candidate: int | None = None

    def say(self, phase: str, text: str) -> None:
        out = self.stream or sys.stderr
        if self.candidate is not None:
            phase += f" #{self.candidate}"
        try:
            out.write(f"coder: [{phase}] {text}\n")
            out.flush()
        except (BrokenPipeError, ValueError):  # stderr closed: progress is not worth failing on
            pass

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            self.candidate = data.get("candidate")
            handler(self, data)
            self.candidate = None

    def _spent(self) -> str:
        return f"{plural(self.tokens, 'token')}, ${self.cost_usd:.4f} so far"

    def _start(self, data: dict[str, Any]) -> None:
        repo = data.get("config", {}).get("repo", ".")
        self.say("setup", f"loading {repo} and starting its sandbox")

    def _ready(self, data: dict[str, Any]) -> None:
        self.say("setup", f"sandbox {data.get('sandbox_id')} ready on {data.get('url')}")

    def _tests(self, data: dict[str, Any]) -> None:
        self.iteration = int(data.get("iteration", self.iteration))
        failing = list(data.get("failing") or [])
        if data.get("passed"):
            state = "passing"
        elif failing:
            state = f"failing ({plural(len(failing), 'test')}: {', '.join(failing[:3])}"
            state += ", ...)" if len(failing) > 3 else ")"
        else:
            state = f"failing (exit {data.get('exit_code')})"
        self.say("tests", f"iteration {self.iteration}: {state}")

    def _request(self, data: dict[str, Any]) -> None:
        self.iteration = int(data.get("iteration", self.iteration))
        agent = str(data.get("agent", Writer.name))
        self.say(agent, f"iteration {self.iteration}: asking {data.get('model')}")

    def _reply(self, data: dict[str, Any]) -> None:
        usage = data.get("usage") or {}
        self.tokens += int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        self.cost_usd += float(usage.get("cost_usd", 0.0))
        cached = " (cached)" if data.get("cached") else ""
        self.say(str(data.get("agent", Writer.name)), f"replied{cached}; {self._spent()}")

    def _retry(self, data: dict[str, Any]) -> None:
        agent = str(data.get("agent", Writer.name))
        self.say(agent, f"retrying in {data.get('delay_s')}s: {data.get('error')}")

    def _edits(self, data: dict[str, Any]) -> None:
        files = list(data.get("files") or [])
        text = f"edited {', '.join(files)}" if files else "no edit applied"
        failed = len(data.get("failed") or []) + len(data.get("refused") or [])
        if failed:
            text += f" ({plural(failed, 'block')} not applied)"
        self.say(Writer.name, f"iteration {data.get('iteration', self.iteration)}: {text}")

    def _requests(self, data: dict[str, Any]) -> None:
        n = data.get("iteration", self.iteration)
        asked = len(data.get("requests") or [])
        text = f"asked for {plural(asked, 'request')}, {data.get('answered', 0)} answered"
        self.say(Writer.name, f"iteration {n}: {text}")

    def _env(self, data: dict[str, Any]) -> None:
        key, snap = data.get("key"), data.get("snapshot_id")
        if snap:
            self.say("setup", f"environment {key} is kept as {snap}: starting from it")
        else:
            self.say("setup", f"environment {key} is not kept yet: it will be prepared")

    def _kept(self, data: dict[str, Any]) -> None:
        self.say("setup", f"kept environment {data.get('key')} as {data.get('snapshot_id')}")

    def _verdict(self, data: dict[str, Any]) -> None:
        n = data.get("iteration", self.iteration)
        self.say(str(data.get("agent", "reviewer")), f"iteration {n}: {data.get('verdict')}")


def _candidates(self: Progress, data: dict[str, Any]) -> None:
    self.say("setup", f"{data.get('candidates')} candidates, each in its own sandbox")


def _candidate_start(self: Progress, data: dict[str, Any]) -> None:
    fork = f", forked from {data['from_snapshot']}" if data.get("from_snapshot") else ""
    self.say("candidate", f"sandbox {data.get('sandbox_id')}{fork}; seed {data.get('seed')}")


def _candidate_end(self: Progress, data: dict[str, Any]) -> None:
    self.say(
        "candidate", f"{data.get('status')} after {plural(data.get('iterations', 0), 'iteration')}"
    )


def _selected(self: Progress, data: dict[str, Any]) -> None:
    chosen = data.get("chosen")
    which = f"candidate {chosen} chosen" if chosen else "none chosen"
    self.say("select", f"{data.get('coverage')}; {which}")


_HANDLERS: dict[str, Callable[[Progress, dict[str, Any]], None]] = {
    "solve.start": Progress._start,
    "sandbox.ready": Progress._ready,
    "tests.run": Progress._tests,
    "model.request": Progress._request,
    "model.reply": Progress._reply,
    "model.retry": Progress._retry,
    "edits.applied": Progress._edits,
    "writer.requests": Progress._requests,
    "review.verdict": Progress._verdict,
    "env.plan": Progress._env,
    "env.kept": Progress._kept,
    "candidates.start": _candidates,
    "candidate.start": _candidate_start,
    "candidate.end": _candidate_end,
    "candidates.selected": _selected,
}
