"""coder's own overhead per iteration (wall time beyond model replies and test runs) and the
writer's prompt size per call, on the scripted model server and a real sandboxd."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from coder.testing.harness import example, scripted, solve
from sandboxd.testing import Daemon

SCENARIOS = [
    ("fixed_after_feedback", "textutils", {}),
    ("long_streak", "textutils", {"max_iterations": 10}),
]


def measure(daemon: Daemon, repeats: int = 3) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for fixture, repo_name, config in SCENARIOS:
        for _ in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix="coder-bench-"))
            try:
                with scripted(fixture) as server:
                    _, result = solve(example(repo_name, tmp), server, daemon, **config)
                out.setdefault(fixture, []).append(result)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        "| scenario | status | iterations | overhead per iteration ms (median) | "
        "test run per iteration ms | overhead / test run | writer prompt chars per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for fixture, runs in results.items():
        last = runs[-1]
        overhead = statistics.median(r["overhead_s_per_iteration"] for r in runs) * 1e3
        per_test = statistics.median(r["test_time_s"] / (r["iterations"] + 1) for r in runs) * 1e3
        sizes = ", ".join(str(s) for s in last["writer_prompt_chars"])
        rows.append(
            f"| {fixture} | {last['status']} | {last['iterations']} | {overhead:.1f} | "
            f"{per_test:.1f} | {overhead / per_test:.2f}x | {sizes} |"
        )
    return "\n".join(
        [
            f"## coder overhead ({len(next(iter(results.values())))} runs per scenario)",
            "",
            "Overhead = wall time of the solve minus model replies minus test runs, divided by the",
            "iterations; it covers prompt building, edit parsing and applying, uploads of changed",
            "files to the sandbox, and the trace. Model replies come from the scripted server.",
            "",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    d = Daemon(work, "coder-bench").start()
    try:
        print(report(measure(d)))
    finally:
        d.stop()
