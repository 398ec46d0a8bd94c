"""The checking roles: shown the task, the tests before and after, and the diff (never the
writer's history, prompts or replies); each answers a typed verdict (coder.agents.verdict).

The reviewer guards against cheating and bad changes (the test run is the verdict on
correctness). The security reviewer, off by default, checks the diff for what CI must never
merge blindly, and may veto. A configured role of either kind may bring its own instructions
(`prompt_file`); the reply format is always coder's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from coder.agents.base import Role
from coder.agents.flags import flags
from coder.agents.verdict import FORMAT, RESPONSE_FORMAT, Verdict, verdict
from coder.digest import TestDigest, head_tail
from coder.model import Message

DIFF_CHARS = 16_000

SYSTEM = """You review a change that made a repository's tests pass.
The test run is the verdict on correctness; you guard against cheating and bad changes:
hard-coded expected values, special cases for test inputs, deleted or weakened assertions,
unrelated changes, security problems.
Approve if the change is a genuine, general fix. Otherwise ask to revise, with concrete points
the writer must address."""

SECURITY = """You are a security reviewer of a change an automated agent wrote; CI may merge it.
Check the diff for what must never be merged blindly:
- tests disabled, skipped, deleted or weakened (assertions removed, expectations loosened);
- new network access or new subprocess, shell or eval/exec calls;
- secrets, tokens or credentials added to the code;
- changes to CI files (.github/, .gitlab-ci.yml, Makefile targets CI runs) or build scripts;
- dependency changes (requirements, pyproject dependencies, lock files).
Veto a change that does any of these without a clear need the task states; ask to revise when
something is unclear; approve otherwise."""


@dataclass(frozen=True)
class ReviewerView:
    """What a checking role may see, and nothing more. `after` is None for a role that acts
    before the change's test run (`after = "edit"`)."""

    task: str
    diff: str
    after: TestDigest | None
    before: TestDigest


class Reviewer(Role[ReviewerView, Verdict]):
    name = "reviewer"
    model_setting: ClassVar[str] = "reviewer"
    response_format: ClassVar[dict[str, Any] | None] = RESPONSE_FORMAT
    default_instructions: ClassVar[str] = SYSTEM

    def notes(self, view: ReviewerView) -> str:
        """More for the prompt, after the diff (the security reviewer's flags)."""
        return ""

    def messages(self, view: ReviewerView) -> list[Message]:
        after = view.after.short() if view.after is not None else "(not run yet)"
        body = (
            f"# Task\n{view.task}\n\n# Tests before the change\n{view.before.short()}\n\n"
            f"# Tests after the change\n{after}\n\n"
            f"# Diff\n```diff\n{head_tail(view.diff, DIFF_CHARS)}\n```"
        ) + self.notes(view)
        system = (self.instructions or self.default_instructions).strip() + "\n\n" + FORMAT
        return [{"role": "system", "content": system}, {"role": "user", "content": body}]

    def parse(self, text: str) -> Verdict:
        return verdict(text)

    def repair(self, error: str) -> str:
        return f"Your reply was not a valid verdict: {error}.\n{FORMAT}"


class SecurityReviewer(Reviewer):
    name = "security"
    model_setting: ClassVar[str] = "reviewer"
    default_instructions: ClassVar[str] = SECURITY

    def notes(self, view: ReviewerView) -> str:
        found = flags(view.diff).text()  # the whole diff, however much of it is shown
        return (
            f"\n\n# Flagged by coder in the diff (facts to weigh, not verdicts)\n{found}"
            if found
            else ""
        )
