"""coder's pure parts: edit blocks, test digests, budgets, the review verdict, the model's
retry policy (against the scripted server over real HTTP)."""

from __future__ import annotations

import asyncio

import pytest
from openai import AsyncOpenAI

from coder.agents.base import ReplyInvalid
from coder.agents.verdict import verdict
from coder.budget import Budget
from coder.digest import digest
from coder.edits import apply_blocks, is_test_path, parse_blocks, unified_diff
from coder.errors import BudgetExhausted, ModelError
from coder.model import OpenAIModel, Usage
from coder.testing.harness import ScriptedServer

FILE = "def f(x):\n    if x:\n        return 1\n    return 0\n"


def block(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_exact_and_whitespace_tolerant_matches() -> None:
    text = block("m.py", "    if x:\n        return 1", "    if x:\n        return 2")
    text += block("m.py", "  return 0", "  return -1")  # wrong indentation, same lines
    report = apply_blocks(parse_blocks(text).blocks, {"m.py": FILE})
    assert report.applied == ["m.py (block 1)", "m.py (block 2)"]
    assert report.changed["m.py"] == "def f(x):\n    if x:\n        return 2\n    return -1\n"


def test_unmatched_block_says_what_it_meant() -> None:
    report = apply_blocks(
        parse_blocks(block("m.py", "    if y:", "    if z:")).blocks, {"m.py": FILE}
    )
    assert not report.changed
    assert "Did you mean these lines (from line 2)?\n    if x:" in report.failed[0]


def test_malformed_blocks_are_errors_not_exceptions() -> None:
    parsed = parse_blocks("m.py\n<<<<<<< SEARCH\nx\n=======\ny\n")
    assert parsed.blocks == [] and "not closed" in parsed.errors[0]
    parsed = parse_blocks("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")
    assert parsed.blocks == [] and "does not name its file" in parsed.errors[0]


def test_new_files_tests_and_bad_paths() -> None:
    blocks = parse_blocks(
        block("pkg/new.py", "", "X = 1")
        + block("tests/test_m.py", "a", "b")
        + block("../escape.py", "", "x")
        + block("/etc/passwd", "", "x")
    ).blocks
    report = apply_blocks(blocks, {"m.py": FILE, "tests/test_m.py": "a\n"})
    assert report.changed == {"pkg/new.py": "X = 1\n"}
    assert len(report.refused) == 3
    allowed = apply_blocks(blocks[1:2], {"tests/test_m.py": "a\n"}, allow_test_edits=True)
    assert allowed.changed == {"tests/test_m.py": "b\n"}


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_a.py", True),
        ("test_a.py", True),
        ("pkg/a_test.go", True),
        ("conftest.py", True),
        ("web/__tests__/x.js", True),
        ("a.spec.ts", True),
        ("src/testing.py", False),
        ("attest.py", False),
        ("pkg/contest/x.py", False),
    ],
)
def test_test_paths(path: str, is_test: bool) -> None:
    assert is_test_path(path) is is_test


def test_unified_diff_applies_cleanly() -> None:
    diff = unified_diff({"a.py": "x = 1\n", "gone.py": "y\n"}, {"a.py": "x = 2\n", "new.py": "z"})
    assert "--- a/a.py\n+++ b/a.py" in diff and "+++ b/new.py" in diff
    assert "\\ No newline at end of file" in diff


PYTEST_OUT = """\
============================= test session starts ==============================
collected 3 items

tests/test_calc.py FF.                                                   [100%]

=================================== FAILURES ===================================
___________________________________ test_add ___________________________________

    def test_add():
>       assert add(2, 3) == 5
E       assert -1 == 5

/workspace/tests/test_calc.py:5: AssertionError
=========================== short test summary info ============================
FAILED tests/test_calc.py::test_add - assert -1 == 5
FAILED tests/test_calc.py::test_neg - assert 0 == 1
========================= 2 failed, 1 passed in 0.04s ==========================
"""


def test_pytest_digest() -> None:
    d = digest(1, "failed", PYTEST_OUT, "")
    assert d.failing == ["tests/test_calc.py::test_add", "tests/test_calc.py::test_neg"]
    assert d.summary == "2 failed, 1 passed"
    assert "/workspace/" not in d.text and "0.04s" not in d.text
    assert "assert add(2, 3) == 5" in d.text and "test session starts" not in d.text
    assert not d.passed


def test_digest_is_capped_head_and_tail() -> None:
    noisy = "\n".join(f"line {i}" for i in range(20_000))
    d = digest(2, "failed", noisy, "")
    assert len(d.text) < 7000
    assert "line 0" in d.text and "line 19999" in d.text and "elided" in d.text


def test_unittest_digest() -> None:
    out = "FAIL: test_x (mod.Case.test_x)\n----\nRan 2 tests in 0.001s\n\nFAILED (failures=1)\n"
    d = digest(1, "failed", "", out)
    assert d.failing == ["mod.Case.test_x"]
    assert d.summary.startswith("Ran 2 tests")


def test_verdicts_are_typed_and_never_guessed() -> None:
    assert verdict("APPROVE\nlooks right").points == "- looks right"
    assert verdict("**REVISE**\n- no").word == "REVISE"
    typed = verdict('```json\n{"verdict": "veto", "points": ["adds a subprocess call"]}\n```')
    assert typed.word == "VETO" and typed.items == ("adds a subprocess call",)
    with pytest.raises(ReplyInvalid, match="no verdict"):
        verdict("Looks fine to me")
    with pytest.raises(ReplyInvalid, match="verdict: Input should be"):
        verdict('{"verdict": "lgtm", "points": []}')
    with pytest.raises(ReplyInvalid, match="points: Field required"):
        verdict('{"verdict": "approve"}')
    with pytest.raises(ReplyInvalid, match="not JSON"):
        verdict('{"verdict": ')


def test_budget_checks() -> None:
    b = Budget(max_iterations=2, max_tokens=100, max_cost_usd=1.0, max_wall_s=60)
    b.start_iteration()
    b.start_iteration()
    with pytest.raises(BudgetExhausted) as err:
        b.start_iteration()
    assert err.value.budget == "iterations"
    b.charge("reviewer", Usage(60, 40, 0.5))
    with pytest.raises(BudgetExhausted) as err:
        b.check()
    assert err.value.budget == "tokens"
    assert b.completion_cap() == 1
    c = Budget(max_cost_usd=0.5)
    c.charge("writer", Usage(1, 1, 0.5))
    with pytest.raises(BudgetExhausted) as err:
        c.check()
    assert err.value.budget == "cost"


def test_model_retries_with_backoff_then_gives_up() -> None:
    server = ScriptedServer("retried").start()
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def scenario() -> None:
        client = AsyncOpenAI(api_key="x", base_url=server.url, max_retries=0)
        model = OpenAIModel(
            client, "writer", prices={"writer": (1.0, 1.0)}, retries=1, backoff_s=0.25, sleep=sleep
        )
        with pytest.raises(ModelError) as err:  # 500, then 429: out of retries
            await model.complete([{"role": "user", "content": "hi"}])
        assert "gave up after 2 tries" in str(err.value)
        reply = await model.complete([{"role": "user", "content": "hi"}])
        assert "return a + b" in reply.text and reply.usage.cost_usd > 0
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
    assert len(delays) == 1 and 0.125 <= delays[0] <= 0.25  # jittered exponential backoff
