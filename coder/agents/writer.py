"""The writer: sees the task, the latest test digest, the relevant files (with the definitions
the failing tests call, `coder.context`), a map of the repository, a compact history of its
attempts, the feedback on its last edit blocks, the reviewer's points and the answers to its
requests; answers with SEARCH/REPLACE edit blocks (`coder.edits`), requests for more of the
repository (`coder.lookup`), both, or gives up.

The edit and request syntaxes are known here (the prompt that teaches them) and in their
parsers only; every part of the prompt has a cap, so it stays bounded however many iterations
run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from coder.agents.base import Role
from coder.context import Attempt, file_sections, relevant_files, repo_map
from coder.digest import TestDigest, head_tail
from coder.edits import REPLACE, SEARCH, ApplyReport, EditBlock, apply_blocks, parse_blocks
from coder.focus import focus
from coder.lookup import FENCE, MAX_PER_TURN, Request, parse_requests
from coder.model import Message

HISTORY_ITEMS = 6
FEEDBACK_CHARS = 3_000
REVIEW_CHARS = 2_000
ANSWERS_CHARS = 14_000  # the lookup caps its answers at 12,000; this is the prompt's bound
GIVE_UP = "GIVE UP"
NO_BLOCKS = "no edit blocks found in your answer"

SYSTEM = f"""You fix a repository so that its failing tests pass.
Answer with edit blocks (or the requests below), in exactly this form, one per change:

path/to/file.py
{SEARCH}
exact lines from the file
=======
the lines that replace them
{REPLACE}

Rules: SEARCH must copy existing lines exactly (enough of them to be unique); an empty SEARCH
creates a new file. Change the code, never the tests. Keep changes minimal and general: do not
special-case the tests' inputs or hard-code their expected values. If you cannot fix it, answer
"{GIVE_UP}" and why.

To see more of the repository first, ask in a fenced block; the answers come in your next
turn only (at most {MAX_PER_TURN} requests a turn, each answer capped; every turn counts against the
iteration budget, so ask only for what you need), with or without edit blocks:

```{FENCE}
READ path/to/file.py:120-180
GREP some literal text
DEFINITION name
```

READ path shows a whole file (a long one as its outline), READ path:START-END those lines;
GREP finds a literal string (path:line: text); DEFINITION shows a function, class,
Class.method or pkg.module.name. Line numbers in headers are not part of the code."""


@dataclass
class WriterView:
    """What the writer may see."""

    task: str
    digest: TestDigest
    files: dict[str, str]
    history: list[Attempt] = field(default_factory=list)
    feedback: str | None = None
    review: str | None = None
    #: coder's answers to the requests of the writer's last answer (`coder.lookup`).
    answers: str | None = None


@dataclass
class WriterAnswer:
    """The writer's reply: it gave up, or these edit blocks (and the malformed ones' errors)."""

    gave_up: bool
    blocks: list[EditBlock] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    #: Lines of its request blocks that were not requests (told back with the answers).
    request_errors: list[str] = field(default_factory=list)

    @property
    def only_asks(self) -> bool:
        """It asked for more and sent no edit block, well-formed or not."""
        return bool(self.requests) and not self.blocks and not self.errors

    def apply(self, files: dict[str, str], *, allow_test_edits: bool) -> ApplyReport:
        """The blocks applied to `files`; the malformed ones count as failed."""
        report = apply_blocks(self.blocks, files, allow_test_edits=allow_test_edits)
        report.failed = self.errors + report.failed
        return report

    @staticmethod
    def feedback(report: ApplyReport) -> str:
        """What the writer is told next about its blocks."""
        return report.feedback() or NO_BLOCKS


class Writer(Role[WriterView, WriterAnswer]):
    name = "writer"
    model_setting: ClassVar[str] = "model"

    def messages(self, view: WriterView) -> list[Message]:
        parts = [f"# Task\n{view.task}", f"# Test results (latest run)\n{view.digest.text}"]
        if view.history:
            shown = view.history[-HISTORY_ITEMS:]
            elided = len(view.history) - len(shown)
            lines = ([f"({elided} earlier attempts elided)"] if elided else []) + [
                a.line() for a in shown
            ]
            parts.append("# Earlier attempts\n" + "\n".join(lines))
        if view.feedback:
            parts.append("# Your last edit blocks\n" + head_tail(view.feedback, FEEDBACK_CHARS))
        if view.review:
            parts.append(
                "# Reviewer's points (address them)\n" + head_tail(view.review, REVIEW_CHARS)
            )
        found = focus(view.digest, view.files)
        if view.answers:
            parts.append(
                "# Answers to your requests (from the repository as it is now)\n"
                + head_tail(view.answers, ANSWERS_CHARS)
            )
        relevant = relevant_files(view.digest, view.files, found)
        parts.append("# Relevant files\n" + file_sections(relevant, view.files, found))
        parts.append("# Repository map\n" + repo_map(view.files))
        system = SYSTEM
        if self.instructions:
            system += "\n\n# The repository's own instructions\n" + self.instructions.strip()
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def parse(self, text: str) -> WriterAnswer:
        asked = parse_requests(text)
        if GIVE_UP in text and SEARCH not in text and not asked.requests:
            return WriterAnswer(gave_up=True)
        parsed = parse_blocks(text)
        return WriterAnswer(
            gave_up=False,
            blocks=parsed.blocks,
            errors=parsed.errors,
            requests=asked.requests,
            request_errors=asked.errors,
        )
