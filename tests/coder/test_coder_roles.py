"""coder's roles and its ledger: each role's prompt holds what the role needs and nothing more
(the reviewer never sees the writer's history, feedback or files), its parser turns good and
bad replies into typed answers, and the budget is the one count of what each role spent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coder import app
from coder.agents import ROLES, Reviewer, Writer
from coder.agents.base import ReplyInvalid
from coder.agents.reviewer import ReviewerView
from coder.agents.writer import GIVE_UP, NO_BLOCKS, WriterView
from coder.budget import Budget
from coder.config import load_config
from coder.context import Attempt
from coder.digest import digest
from coder.errors import BudgetExhausted, CoderError, ModelError, SandboxError, UsageError
from coder.model import Message, Model, Reply, Usage
from coder.result import EXIT_CODES
from coder.testing.harness import example, write_config
from tests.daemon import Daemon

FAILING = digest(
    1, "failed", "FAILED tests/test_m.py::test_f - assert 0 == 1\n1 failed in 0.01s\n", ""
)
PASSING = digest(0, "ok", "1 passed in 0.01s\n", "")
FILES = {
    "m.py": "def f():\n    return 0\n",
    "tests/test_m.py": "from m import f\n\ndef test_f():\n    assert f() == 1\n",
    "unrelated.py": "SECRET_OF_UNRELATED = 1\n",
}
HISTORY = [Attempt(1, ["m.py"], "WRITER-HISTORY-MARK still failing")]


def text(messages: list[Message]) -> str:
    return "\n".join(m["content"] for m in messages)


def test_the_writer_sees_task_tests_files_history_feedback_and_review() -> None:
    view = WriterView(
        "the task", FAILING, FILES, HISTORY, feedback="FEEDBACK-MARK", review="REVIEW-MARK"
    )
    prompt = text(Writer().messages(view))
    for part in ("the task", "tests/test_m.py::test_f", "def f():", "WRITER-HISTORY-MARK"):
        assert part in prompt
    assert "FEEDBACK-MARK" in prompt and "REVIEW-MARK" in prompt
    assert "<<<<<<< SEARCH" in prompt  # the writer is taught the edit syntax
    assert "SECRET_OF_UNRELATED" not in prompt  # an unrelated file: on the map, not in full
    assert "unrelated.py" in prompt


def test_the_reviewer_sees_task_tests_and_diff_and_nothing_of_the_writer() -> None:
    assert set(ReviewerView.__dataclass_fields__) == {"task", "diff", "after", "before"}
    view = ReviewerView("the task", "-    return 0\n+    return 1\n", PASSING, FAILING)
    prompt = text(Reviewer().messages(view))
    assert "the task" in prompt and "+    return 1" in prompt
    assert "1 passed" in prompt and "tests/test_m.py::test_f" in prompt
    assert "WRITER-HISTORY-MARK" not in prompt and "<<<<<<< SEARCH" not in prompt
    assert "SECRET_OF_UNRELATED" not in prompt and "def f():" not in prompt


def test_the_writer_parses_blocks_malformed_blocks_and_giving_up() -> None:
    writer = Writer()
    good = writer.parse(
        "m.py\n<<<<<<< SEARCH\n    return 0\n=======\n    return 1\n>>>>>>> REPLACE\n"
    )
    assert not good.gave_up and [b.path for b in good.blocks] == ["m.py"] and not good.errors
    report = good.apply(FILES, allow_test_edits=False)
    assert report.changed == {"m.py": "def f():\n    return 1\n"}
    bad = writer.parse("m.py\n<<<<<<< SEARCH\nx\n")
    assert not bad.gave_up and not bad.blocks and "not closed" in bad.errors[0]
    failed = bad.apply(FILES, allow_test_edits=False)
    assert not failed.changed and "not closed" in bad.feedback(failed)
    words = writer.parse("just words")
    assert words.feedback(words.apply(FILES, allow_test_edits=False)) == (NO_BLOCKS)
    assert writer.parse(f"{GIVE_UP}: cannot see why").gave_up
    # Saying "give up" beside an edit block is an edit, not giving up.
    assert not writer.parse(f"{GIVE_UP}?\nm.py\n<<<<<<< SEARCH\n").gave_up


@pytest.mark.parametrize(
    ("reply", "word"),
    [
        ("APPROVE\nfine", "APPROVE"),
        ("REVISE\n- hard-coded", "REVISE"),
        ('{"verdict": "revise", "points": ["hard-coded"]}', "REVISE"),
    ],
)
def test_the_reviewer_parses_typed_verdicts(reply: str, word: str) -> None:
    verdict = Reviewer().parse(reply)
    assert verdict.word == word and verdict.points


def test_the_reviewer_refuses_to_guess_a_verdict() -> None:
    with pytest.raises(ReplyInvalid, match="no verdict"):
        Reviewer().parse("lgtm")


def test_every_role_names_its_model_from_the_config(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.toml"), {})
    assert {r.name: r.model_name(cfg) for r in ROLES} == {
        "writer": "writer",
        "reviewer": "reviewer",
    }


def test_the_ledger_is_one_count_per_role() -> None:
    b = Budget(max_tokens=1000)
    b.prompt("writer", 120)
    b.charge("writer", Usage(10, 5, 0.25))
    b.charge("writer", Usage(), cached=True)
    b.charge("reviewer", Usage(3, 2, 0.125))
    assert b.total.tokens == 20 and b.total.cost_usd == 0.375
    writer = b.entry("writer").wire()
    assert (writer.calls, writer.cached_calls, writer.prompt_tokens) == (2, 1, 10)
    assert writer.cost_usd == 0.25 and b.entry("writer").prompt_chars == [120]
    assert b.entry("reviewer").wire().calls == 1
    assert b.entry("later-role").wire().calls == 0  # a role not yet asked: an empty entry
    assert b.completion_cap() == 980


@pytest.mark.parametrize(
    "error",
    [
        CoderError("x"),
        UsageError("x"),
        ModelError("x"),
        SandboxError("x"),
        BudgetExhausted("cost", "x"),
    ],
)
def test_every_error_has_its_own_status_and_exit_code(error: CoderError) -> None:
    assert EXIT_CODES[error.status] == error.exit_code
    if not isinstance(error, SandboxError):
        assert error.status != "sandbox_error"


class Refusing(Model):
    """A writer whose call fails with an error that is not the sandbox's (nor the model's)."""

    name = "writer"

    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Reply:
        raise UsageError("the writer's endpoint wants a setting coder does not have")


class Unused(Model):
    name = "reviewer"

    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Reply:
        raise AssertionError("the reviewer is not asked before the tests pass")


def test_an_error_that_is_not_the_sandboxs_is_not_reported_as_one(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    cfg = load_config(
        write_config(tmp_path / "c.toml"),
        {"repo": repo, "sandboxd_url": daemon.url, "sandboxd_token": daemon.token},
    )
    models: dict[str, Model] = {"writer": Refusing(), "reviewer": Unused()}
    outcome = asyncio.run(app.solve(cfg, models=models))
    result = outcome.result
    assert result.status == "usage_error" and result.exit_code == 2
    assert "wants a setting" in result.reason
    assert result.tests_before is not None and not result.tests_before.passed
