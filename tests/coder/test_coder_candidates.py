"""Best of N end to end: the scripted model (each candidate's requests carry its own seed, so
concurrent candidates follow their own script), the real openai client, a real sandboxd with
one sandbox per candidate. Selection: target tests, then the full suite, then a vote over
normalised diffs, then the reviewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coder.testing.harness import example, scripted, solve
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
