"""Each solve reports itself to the daemon it uses (`coder.report`): the Studio's Solves page
reads what a real `coder solve` (scripted model, real daemon) sent."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from coder.testing.harness import example, scripted, solve
from sandboxd.models import Solve, SolveList
from tests.daemon import Daemon


def read(daemon: Daemon, path: str) -> bytes:
    with urllib.request.urlopen(daemon.request(path), timeout=30) as resp:
        body: bytes = resp.read()
    return body


def test_a_solve_reports_its_rounds_verdicts_and_patch(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("reviewer_revise") as server:
        proc, result = solve(repo, server, daemon)
    assert result["status"] == "fixed", proc.stderr
    assert "[report]" not in proc.stderr  # nothing to say when reporting works
    page = SolveList.model_validate_json(read(daemon, "/v1/solves?limit=200"))
    found = [s for s in page.solves if s.trace_id == result["trace_id"]]
    assert len(found) == 1
    got = Solve.model_validate_json(read(daemon, f"/v1/solves/{found[0].id}"))
    assert got.status == "fixed" and got.repo == "calculator"
    assert got.test_command == "pytest -q"
    assert got.models == {"writer": "writer", "reviewer": "reviewer"}
    assert got.budgets["max_iterations"] == 8
    events = [e.event for e in got.timeline]
    tests = [e for e in events if e.kind == "tests"]
    assert tests[0].round == 0 and not tests[0].passed and tests[0].patch is None
    assert tests[0].failing == result["tests_before"]["failing"]
    assert tests[-1].passed and tests[-1].patch and "+    return a + b" in tests[-1].patch
    assert [e.verdict for e in events if e.kind == "review"] == ["REVISE", "APPROVE"]
    assert [e.round for e in events if e.kind == "edits"] == [1, 2]
    models = [e for e in events if e.kind == "model"]
    assert {m.role for m in models} == {"writer", "reviewer"}
    assert (
        sum(m.usage.prompt_tokens for m in models if m.role == "writer")
        == (result["writer"]["prompt_tokens"])
    )
    end = events[-1]
    assert end.kind == "end" and end.rounds == 2
    assert end.patch == Path(result["patch_path"]).read_text()
    assert end.usage["reviewer"].calls == 2
    sandbox_notes = [e for e in events if e.kind == "note" and e.sandbox_id]
    assert len(sandbox_notes) == 1
