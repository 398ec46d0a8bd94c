"""The reviewer: sees the task, the tests before and after, and the diff (never the writer's
history, prompts or replies); answers APPROVE or REVISE with points. The test run is the
verdict on correctness; the reviewer guards against cheating and bad changes. Anything unclear
is a REVISE: it fails closed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from coder.agents.base import Role
from coder.digest import TestDigest, head_tail
from coder.model import Message

DIFF_CHARS = 16_000

SYSTEM = """You review a change that made a repository's tests pass.
The test run is the verdict on correctness; you guard against cheating and bad changes:
hard-coded expected values, special cases for test inputs, deleted or weakened assertions,
unrelated changes, security problems.
Answer APPROVE on the first line if the change is a genuine, general fix. Otherwise answer
REVISE on the first line, then concrete points the writer must address."""


@dataclass(frozen=True)
class ReviewerView:
    """What the reviewer may see, and nothing more."""

    task: str
    diff: str
    after: TestDigest
    before: TestDigest


@dataclass(frozen=True)
class Verdict:
    word: Literal["APPROVE", "REVISE"]
    points: str


def verdict(text: str) -> tuple[str, str]:
    """('APPROVE' | 'REVISE', points). Anything unclear is a REVISE: it fails closed."""
    first, _, rest = text.strip().partition("\n")
    word = first.strip().strip("*#:. ").upper()
    if word.startswith("APPROVE"):
        return "APPROVE", rest.strip()
    if word.startswith("REVISE"):
        return "REVISE", rest.strip() or "revise (no points given)"
    return "REVISE", f"the review did not start with APPROVE or REVISE:\n{text.strip()}"


class Reviewer(Role[ReviewerView, Verdict]):
    name: ClassVar[str] = "reviewer"
    model_setting: ClassVar[str] = "reviewer"

    def messages(self, view: ReviewerView) -> list[Message]:
        body = (
            f"# Task\n{view.task}\n\n# Tests before the change\n{view.before.short()}\n\n"
            f"# Tests after the change\n{view.after.short()}\n\n"
            f"# Diff\n```diff\n{head_tail(view.diff, DIFF_CHARS)}\n```"
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]

    def parse(self, text: str) -> Verdict:
        word, points = verdict(text)
        return Verdict("APPROVE" if word == "APPROVE" else "REVISE", points)
