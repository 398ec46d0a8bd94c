"""`coder solve` end to end: the scripted model server, the real openai client, a real
sandboxd running every test run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coder.testing.harness import REPO, example, scripted, solve
from sandboxd.testing import audit_trail
from tests.daemon import Daemon


def trace_events(result: dict[str, object]) -> list[dict[str, object]]:
    path = Path(str(result["trace_path"]))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fixed_at_first_try(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon)
        assert server.steps_left == 0
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed" and result["iterations"] == 1
    assert result["tests_before"]["failing"] == [
        "tests/test_calc.py::test_add",
        "tests/test_calc.py::test_add_negative",
    ]
    assert result["tests_after"]["passed"] is True
    patch = Path(result["patch_path"]).read_text()
    assert "-    return a - b\n+    return a + b\n" in patch and "tests/" not in patch
    assert (repo / "calc.py").read_text().count("a - b") == 1  # not applied without --apply
    assert result["writer"]["calls"] == 1 and result["reviewer"]["calls"] == 1
    assert result["writer"]["cost_usd"] > 0
    kinds = [e["type"] for e in trace_events(result)]
    assert kinds[0] == "solve.start" and kinds[-1] == "solve.end"
    assert {"tests.run", "model.request", "model.reply", "edits.applied", "review.verdict"} <= set(
        kinds
    )
    assert {e["trace_id"] for e in trace_events(result)} == {result["trace_id"]}


def test_sandboxd_audit_carries_the_trace_id(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        _, result = solve(repo, server, daemon)
    with daemon.client() as c:
        records = [r for r in audit_trail(c) if r.trace_id == result["trace_id"]]
    assert {"sandbox.create", "sandbox.run", "file.put", "sandbox.delete"} <= {
        r.action for r in records
    }


def test_fixed_after_test_feedback(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("textutils", tmp_path)
    with scripted("fixed_after_feedback") as server:
        proc, result = solve(repo, server, daemon)
        second_prompt = server.requests[1]["messages"][1]["content"]
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed" and result["iterations"] == 2
    assert "failing tests: tests/test_text.py::test_word_count" in second_prompt
    assert "/workspace/" not in second_prompt  # sandbox paths are stripped


def test_reviewer_revise_then_fixed(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("reviewer_revise") as server:
        proc, result = solve(repo, server, daemon)
    assert result["status"] == "fixed", proc.stderr
    assert result["iterations"] == 2 and result["reviewer"]["calls"] == 2
    verdicts = [e["verdict"] for e in trace_events(result) if e["type"] == "review.verdict"]
    assert verdicts == ["REVISE", "APPROVE"]
    assert "{(2, 3): 5" not in Path(result["patch_path"]).read_text()


def test_malformed_and_unmatched_blocks_then_recovered(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("malformed_then_recovered") as server:
        proc, result = solve(repo, server, daemon)
    assert result["status"] == "fixed", proc.stderr
    assert result["iterations"] == 3
    runs = [e for e in trace_events(result) if e["type"] == "tests.run"]
    assert len(runs) == 2  # no test run for answers that changed nothing


def test_editing_tests_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("test_edit_refused") as server:
        proc, result = solve(repo, server, daemon)
    assert result["status"] == "fixed", proc.stderr
    applied = [e for e in trace_events(result) if e["type"] == "edits.applied"]
    assert applied[0]["refused"] and not applied[0]["applied"]
    assert "tests/test_calc.py" not in Path(result["patch_path"]).read_text()


def test_model_errors_are_retried(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("retried") as server:
        proc, result = solve(repo, server, daemon)
        assert len(server.requests) == 5
    assert result["status"] == "fixed", proc.stderr
    retries = [e["error"] for e in trace_events(result) if e["type"] == "model.retry"]
    assert retries == ["InternalServerError", "RateLimitError", "InternalServerError"]


def test_model_error_after_retries(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("none") as server:  # every request gets a 400: not retryable
        proc, result = solve(repo, server, daemon)
    assert proc.returncode == 3
    assert result["status"] == "model_error" and "no steps left" in result["reason"]


@pytest.mark.parametrize(
    ("config", "budget"),
    [
        ({"max_iterations": 1}, "iterations"),
        ({"max_cost_usd": 0.001}, "cost"),  # the first call fits ($0.00065 of prompt)
        # the first prompt fits (~870 tokens as estimated at 3 characters a token), the second not
        ({"max_tokens": 1100}, "tokens"),
    ],
)
def test_budget_exhausted_fails_closed_and_keeps_the_partial_diff(
    daemon: Daemon, tmp_path: Path, config: dict[str, object], budget: str
) -> None:
    repo = example("textutils", tmp_path)
    with scripted("partial_fix") as server:
        proc, result = solve(repo, server, daemon, **config)
        assert len(server.requests) == 1  # nothing is spent past the budget
    assert proc.returncode == 1
    assert result["status"] == "budget_exhausted" and result["budget"] == budget
    assert "title.lower()" in Path(result["patch_path"]).read_text()


def test_gave_up(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("gives_up") as server:
        proc, result = solve(repo, server, daemon)
    assert proc.returncode == 1 and result["status"] == "gave_up"


def test_already_passing(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("passing", tmp_path)
    with scripted("none") as server:
        proc, result = solve(repo, server, daemon)
        assert server.requests == []
    assert proc.returncode == 0 and result["status"] == "already_passing"
    assert result["patch_path"] is None


def test_prompt_stays_bounded(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("textutils", tmp_path)
    with scripted("long_streak") as server:
        proc, result = solve(repo, server, daemon, max_iterations=10)
    assert result["status"] == "budget_exhausted" and result["iterations"] == 10, proc.stderr
    sizes = result["writer_prompt_chars"]
    assert len(sizes) == 10
    assert max(sizes) < 20_000
    assert sizes[-1] - sizes[6] < 500  # the history is capped: no growth past it
    assert result["overhead_s_per_iteration"] < 2.0


def test_the_writer_reads_then_fixes(daemon: Daemon, tmp_path: Path) -> None:
    """The writer asks for a line range, a search and a definition (and one bad request);
    coder answers from its copy before the next turn, and the edit that follows goes green."""
    repo = tmp_path / "far_down"
    shutil.copytree(REPO / "tests" / "fixtures" / "repos" / "far_down", repo)
    with scripted("read_then_fixed") as server:
        proc, result = solve(repo, server, daemon)
        assert server.steps_left == 0
    assert proc.returncode == 0, (proc.stderr, result["reason"])
    assert result["status"] == "fixed" and result["iterations"] == 2
    assert result["writer"]["calls"] == 2
    asked = [e for e in trace_events(result) if e["type"] == "writer.requests"]
    assert len(asked) == 1 and asked[0]["iteration"] == 1 and asked[0]["answered"] == 3
    refused = "not a request: 'DELETE everything' (use READ, GREP, DEFINITION)"
    assert asked[0]["refused"] == [refused]
    applied = [e["iteration"] for e in trace_events(result) if e["type"] == "edits.applied"]
    assert applied == [2]  # the turn that only asked applied nothing and ran no tests
    runs = [e for e in trace_events(result) if e["type"] == "tests.run"]
    assert len(runs) == 2
    assert "iteration 1: asked for 3 requests, 3 answered" in proc.stderr
