"""The benchmark script keeps working (a few iterations; its numbers are not asserted)."""

from __future__ import annotations

from bench.hello_latency import measure, report


def test_hello_latency_bench_runs() -> None:
    samples = measure(iterations=3, warmup=1)
    assert len(samples["bare"]) == len(samples["api"]) == 3
    text = report(samples)
    assert "| sandboxd HTTP API" in text
