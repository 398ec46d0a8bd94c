"""Best of N end to end: the scripted model (each candidate's requests carry its own seed, so
concurrent candidates follow their own script), the real openai client, a real sandboxd with
one sandbox per candidate. Selection: target tests, then the full suite, then a vote over
normalised diffs, then the reviewer."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coder.testing.harness import coder_env, example, run_coder, scripted, solve
from tests.coder.test_coder_envs import INDEX, repository
from tests.daemon import Daemon


def events(result: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(str(result["trace_path"]))
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_index(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {c["index"]: c for c in result["candidates"]}


def test_two_equal_diffs_outvote_a_third(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("candidates_vote") as server:
        proc, result = solve(repo, server, daemon, candidates=3)
        assert server.steps_left == 0
        seeds = sorted(r["seed"] for r in server.requests if r["model"] == "writer")
        temperatures = {r["temperature"] for r in server.requests if r["model"] == "writer"}
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seeds == [1, 2, 3] and temperatures == {0.7}
    assert result["status"] == "fixed" and result["chosen_candidate"] == 2
    assert result["coverage"] == "3 of 3 candidates green"
    c = by_index(result)
    assert [c[n]["status"] for n in (1, 2, 3)] == ["green"] * 3
    assert c[2]["fingerprint"] == c[3]["fingerprint"] != c[1]["fingerprint"]
    assert (c[1]["votes"], c[2]["votes"], c[3]["votes"]) == (1, 2, 2)
    assert c[2]["chosen"] and not c[1]["chosen"] and not c[3]["chosen"]
    assert "2 of 3 eligible votes" in c[2]["why"]
    assert "same change as candidate 2" in c[3]["why"]
    assert "ranked higher" in c[1]["why"]
    sandboxes = {c[n]["sandbox_id"] for n in (1, 2, 3)}
    assert len(sandboxes) == 3 and None not in sandboxes  # a sandbox each
    patch = Path(result["patch_path"]).read_text()
    assert "+    return a + b\n" in patch and "b + a" not in patch
    assert result["writer"]["calls"] == sum(c[n]["usage"]["writer"]["calls"] for n in (1, 2, 3))
    assert result["reviewer"]["calls"] == 1 == c[2]["usage"]["reviewer"]["calls"]
    kinds = [e["type"] for e in events(result)]
    assert kinds.count("candidate.start") == 3 and kinds.count("candidate.end") == 3
    assert "candidates.selected" in kinds
    tagged = {e.get("candidate") for e in events(result) if e["type"] == "model.request"}
    assert tagged == {1, 2, 3}
    assert "coder: [select] 3 of 3 candidates green; candidate 2 chosen" in proc.stderr
    assert "coder: [writer #3] iteration 1: asking writer" in proc.stderr
    out = tmp_path / "replayed.diff"
    with scripted("none") as nobody:  # any model request would fail
        replay = run_coder(
            "replay",
            result["trace_path"],
            "--json",
            "--patch-out",
            str(out),
            env=coder_env(daemon, OPENAI_BASE_URL=nobody.url),
        )
        assert nobody.requests == []
    again = json.loads(replay.stdout)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert again["chosen_candidate"] == 2 and again["trace_id"] != result["trace_id"]
    assert out.read_text() == patch
    assert [c["why"] for c in again["candidates"]] == [c[n]["why"] for n in (1, 2, 3)]


def test_a_hard_coded_fix_that_breaks_another_test_is_never_chosen(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Candidates 1 and 2 agree (two votes) on a change that passes the target tests by
    hard-coding their values and breaks test_multiply; the full suite leaves them out."""
    repo = example("calculator", tmp_path)
    with scripted("candidates_regression") as server:
        proc, result = solve(
            repo, server, daemon, candidates=3, test="pytest -q -k add", full_test="pytest -q"
        )
        assert server.steps_left == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["status"] == "fixed" and result["chosen_candidate"] == 3
    c = by_index(result)
    assert [c[n]["status"] for n in (1, 2, 3)] == ["green"] * 3  # the target tests pass
    for n in (1, 2):
        assert c[n]["full_suite"]["passed"] is False and not c[n]["chosen"]
        assert "full suite fails" in c[n]["why"] and "test_multiply" in c[n]["why"]
        assert c[n]["votes"] == 0
    assert c[3]["full_suite"]["passed"] is True and c[3]["votes"] == 1
    assert result["tests_after"]["passed"] is True
    assert "{(2, 3): 5" not in Path(result["patch_path"]).read_text()
    full = [e for e in events(result) if e["type"] == "tests.run" and e.get("suite") == "full"]
    assert sorted(e["candidate"] for e in full) == [1, 2, 3]


def test_the_budget_runs_out_in_the_middle_of_the_candidates(
    daemon: Daemon, tmp_path: Path
) -> None:
    """One token ledger for all: no call starts that the pool cannot hold, and what each
    candidate spent adds up to the total, under the limit."""
    repo = example("calculator", tmp_path)
    max_tokens = 3000
    with scripted("candidates_budget") as server:
        proc, result = solve(repo, server, daemon, candidates=3, max_tokens=max_tokens)
        calls = len(server.requests)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert result["status"] == "budget_exhausted" and result["budget"] == "tokens"
    assert 2 <= calls < 12  # some calls were made, not every scripted one
    c = by_index(result)
    spent = [
        c[n]["usage"]["writer"]["prompt_tokens"] + c[n]["usage"]["writer"]["completion_tokens"]
        for n in (1, 2, 3)
    ]
    total = result["writer"]["prompt_tokens"] + result["writer"]["completion_tokens"]
    assert sum(spent) == total <= max_tokens
    assert sum(c[n]["usage"]["writer"]["calls"] for n in (1, 2, 3)) == calls
    assert {c[n]["status"] for n in (1, 2, 3)} == {"budget_exhausted"}
    assert result["coverage"] == "0 of 3 candidates green"


def test_one_candidates_sandbox_failing_does_not_sink_the_others(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Candidate 1's sandbox is deleted under it while its model call is in flight."""
    repo = example("calculator", tmp_path)
    traces = repo / ".coder" / "traces"
    with scripted("candidates_sandbox_gone") as server, ThreadPoolExecutor(1) as pool:
        running = pool.submit(solve, repo, server, daemon, "--quiet", candidates=2)
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and not running.done():
            for path in traces.glob("*.jsonl") if traces.is_dir() else []:
                for line in path.read_text().splitlines():
                    e = json.loads(line)
                    if e["type"] == "candidate.start" and e["candidate"] == 1:
                        victim = e["sandbox_id"]
            time.sleep(0.05)
        assert victim is not None, "candidate 1 never started"
        with daemon.client() as c:
            c.delete_sandbox(victim)
        proc, result = running.result(timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = by_index(result)
    assert c[1]["status"] == "sandbox_error" and c[1]["sandbox_id"] == victim
    assert c[2]["status"] == "green" and c[2]["chosen"]
    assert result["status"] == "fixed" and result["coverage"] == "1 of 2 candidates green"
    assert "+    return b + a" in Path(result["patch_path"]).read_text()


def test_candidates_fork_the_prepared_environment(daemon: Daemon, tmp_path: Path) -> None:
    """The setup runs once, in a base sandbox kept as the environment's snapshot; each
    candidate's sandbox is a fork of it (the repository's own test checks the setup ran once
    in the environment it sees)."""
    repo = repository(tmp_path)
    with scripted("candidates_env") as server:
        proc, result = solve(repo, server, daemon, candidates=2, **INDEX)
        assert server.steps_left == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["status"] == "fixed" and result["coverage"] == "2 of 2 candidates green"
    env = result["env"]
    assert env["key"] and env["snapshot_id"] and env["reused"] is False
    c = by_index(result)
    assert c[1]["from_snapshot"] == c[2]["from_snapshot"] == env["snapshot_id"]
    assert c[1]["sandbox_id"] != c[2]["sandbox_id"]
    assert c[1]["fingerprint"] == c[2]["fingerprint"]  # a comment does not make it another
    assert (c[1]["votes"], c[2]["votes"]) == (2, 2) and result["chosen_candidate"] == 1
    steps = [e for e in events(result) if e["type"] == "setup.step"]
    assert [e.get("candidate") for e in steps] == [None]  # once, in the base sandbox
    assert "test_the_setup_ran_once" not in json.dumps(c[1]["tests_after"]["failing"])
    with daemon.client() as client:
        client.delete_snapshot(env["snapshot_id"])


def test_stop_after_green_stops_the_rest(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("candidates_early_stop") as server:
        started = time.monotonic()
        proc, result = solve(repo, server, daemon, candidates=3, stop_after_green=2)
        took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = by_index(result)
    assert [c[n]["status"] for n in (1, 2, 3)] == ["green", "green", "stopped"]
    assert "2 candidates were green already" in c[3]["reason"]
    assert result["coverage"] == "2 of 3 candidates green" and result["chosen_candidate"] == 1
    assert took < 20  # candidate 3's reply (20 s away) was not waited for


def test_each_candidate_may_have_its_own_model(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    candidate = [{"temperature": 0.1}, {"model": "security", "seed": 99}]
    with scripted("candidates_models") as server:
        proc, result = solve(repo, server, daemon, candidates=2, candidate=candidate)
        asked = sorted(
            (r["model"], r["seed"], r["temperature"])
            for r in server.requests
            if r["model"] != "reviewer"
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert asked == [("security", 99, 0.7), ("writer", 1, 0.1)]
    c = by_index(result)
    assert (c[1]["model"], c[1]["status"]) == ("writer", "green")
    assert (c[2]["model"], c[2]["status"]) == ("security", "gave_up")
    assert "not green (gave_up)" in c[2]["why"] and result["chosen_candidate"] == 1
    assert result["coverage"] == "1 of 2 candidates green"
