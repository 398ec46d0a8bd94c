"""Every benchmark keeps working: a few iterations each, in CI too. Nothing here is timed;
the checks are the benches' own (right output, all HumanEval problems pass, no leak)."""

from __future__ import annotations

from bench import (
    autogen_executors,
    coder_candidates,
    context_latency,
    docker_latency,
    fork_latency,
    hello_latency,
    humaneval,
    mcp_latency,
    sandbox_latency,
    soak,
)
from tests.daemon import Daemon


def test_hello_latency_bench_runs() -> None:
    samples = hello_latency.measure(iterations=3, warmup=1)
    assert {len(v) for v in samples.values()} == {3}
    kinds = ("bare", "pool", "fork", "cold")
    exec_keys = {f"{lang}_{k}" for lang in ("bash", "node") for k in kinds}
    assert (
        set(samples)
        == {
            "bare",
            "pool",
            "fork",
            "cold",
            "autogen",
            "floor_py",
            "floor_true",
            "floor_prestarted",
        }
        | exec_keys
    )
    report = hello_latency.report(samples)
    assert "| sandboxd HTTP API, nsjail, warm pool |" in report
    assert "| bash: sandboxd HTTP API, nsjail, exec pool |" in report
    assert "a jail forked per run by the fork server |" in report


def test_sandbox_latency_bench_runs() -> None:
    samples = sandbox_latency.measure(iterations=2, warmup=1)
    assert {key: len(v) for key, v in samples.items()} == {"fork": 2, "cold": 2}
    assert "Target (issue 20): ≤ 15 ms p50" in sandbox_latency.report(samples)


def test_humaneval_bench_runs() -> None:
    data = humaneval.measure(limit=6)  # raises if any contender fails a problem
    contenders = {"bare", "api", "api_fork", "api_before", "autogen"}
    assert data["n"] == 6 and set(data["times"]) == contenders
    assert "6/6" in humaneval.report(data)


def test_docker_bench_runs() -> None:
    samples = docker_latency.measure(iterations=2, warmup=1)
    assert {len(v) for v in samples.values()} == {2}
    prefixes = ("", "bash_", "node_")
    assert set(samples) == {f"{p}{k}" for p in prefixes for k in ("raw", "cold", "warm")}


def test_soak_bench_runs_clean() -> None:
    measured = [soak.measure(runs=40, concurrency=2, fork_server=on) for on in (True, False)]
    for data in measured:
        assert data["errors"] == []
        assert set(data["leaks"].values()) == {0}
        assert set(data["after_stop"].values()) == {0}
    assert "| runs per second |" in soak.report(*measured)


def test_fork_bench_runs() -> None:
    data = fork_latency.measure(forks=2, env_mib=2, files=40)  # raises if a fork misses files
    assert len(data["fork"]) == len(data["fresh"]) == 2
    assert data["snapshot_bytes"] >= 2_000_000
    assert data["fork_bytes"] < data["snapshot_bytes"]  # a fork copies nothing
    assert "| a fork's image, just made |" in fork_latency.report(data)


def test_coder_candidates_bench_runs(daemon: Daemon) -> None:
    data = coder_candidates.measure(
        daemon, repeats=1, delays=(0.0,), ns=(1, 2), tasks=coder_candidates.TASKS[:1]
    )
    runs = data["runs"]
    assert set(runs) == {"calculator|0.0|1", "calculator|0.0|2"}
    assert runs["calculator|0.0|2"][0]["coverage"] == "2 of 2 candidates green"
    assert len(runs["calculator|0.0|2"][0]["overheads_s"]) == 2
    report = coder_candidates.report(data)
    assert "| calculator | 0 s | 2 | 2 of 2 candidates green |" in report


def test_autogen_executors_bench_runs() -> None:
    data = autogen_executors.measure(limit=3)  # raises if any executor fails a problem
    docker = {"docker", "sandboxd_docker"} if data["docker"] else set()
    assert set(data["times"]) == {"local", "sandboxd", "sandboxd_fresh", "sandboxd_state"} | docker
    assert "| 3/3 |" in autogen_executors.report(data)


def test_mcp_latency_bench_runs() -> None:
    samples = mcp_latency.measure(iterations=2, warmup=1)  # raises unless every run is ok
    assert {k: len(v) for k, v in samples.items()} == {"api": 2, "http": 2, "stdio": 2}
    assert "| MCP `run_code` over stdio" in mcp_latency.report(samples)


def test_context_bench_runs() -> None:
    data = context_latency.measure(iterations=3)
    # The Docker row too: CI fails on a missing engine, so here it has one.
    assert all(len(data[key]) == 3 for key in context_latency.LABELS), data["docker_problem"]
    assert len(data["inner"]) == 3 + 5  # with the warm-ups
    assert "in a warm context |" in context_latency.report(data)
