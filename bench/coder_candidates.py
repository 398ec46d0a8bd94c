"""Best of N: the wall time of `coder solve --candidates N` for N = 1, 2, 4 on the same tasks,
with the scripted model (how well the candidates' loops overlap on this machine), and coder's
overhead per candidate (its wall time beyond its model replies and test runs: its sandbox's
start, the upload, coder's own work, waiting for a test slot).

Every candidate of a task gets the same script (its requests carry its own seed, so the
scripted server answers each loop in order), so N candidates do N times the work of one; a
model reply takes `delay_s` (0: coder and sandboxd alone; 1 s: a fast model). Runs are
interleaved (N = 1, 2, 4, then again), and every ratio is against N = 1 of the same round.

    python -m bench.coder_candidates [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import describe
from coder.testing.harness import FIXTURES, example, scripted, solve
from sandboxd.testing import Daemon

#: (task name, example repository, fixture whose writer replies fix it).
TASKS = [
    ("calculator", "calculator", "fixed_first_try"),
    ("textutils", "textutils", "fixed_after_feedback"),
]
NS = (1, 2, 4)
APPROVE = '{"verdict": "approve", "points": []}'


def steps(fixture: str, n: int, delay_s: float) -> list[dict[str, Any]]:
    """The fixture's writer replies once per candidate (by seed), then the reviewer's."""
    script = json.loads((FIXTURES / f"{fixture}.json").read_text())["steps"]
    writer = [s for s in script if s.get("model") == "writer"]
    out: list[dict[str, Any]] = []
    for seed in range(1, n + 1):
        for s in writer:
            step = {"reply": s["reply"], "delay_s": delay_s}
            if n > 1:
                step["when"] = {"seed": seed}
            out.append(step)
    out.append({"when": {"model": "reviewer"}, "reply": APPROVE, "delay_s": delay_s})
    return out


def one(daemon: Daemon, task: tuple[str, str, str], n: int, delay_s: float) -> dict[str, Any]:
    _, repo_name, fixture = task
    tmp = Path(tempfile.mkdtemp(prefix="coder-bench-n-"))
    try:
        with scripted(fixture, steps(fixture, n, delay_s)) as server:
            started = time.monotonic()
            proc, result = solve(example(repo_name, tmp), server, daemon, candidates=n)
            wall = time.monotonic() - started
        if result["status"] != "fixed":
            raise RuntimeError(f"{task[0]} N={n}: {result['status']}: {proc.stderr[-2000:]}")
        cands = result["candidates"] or []
        return {
            "wall_s": wall,
            "solve_s": result["wall_time_s"],
            "coverage": result["coverage"] or "1 of 1 candidates green",
            "overheads_s": [c["overhead_s"] for c in cands],
            "calls": result["writer"]["calls"] + result["reviewer"]["calls"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(
    daemon: Daemon,
    repeats: int = 3,
    delays: tuple[float, ...] = (0.0, 1.0),
    ns: tuple[int, ...] = NS,
    tasks: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for delay in delays:
            for task in tasks or TASKS:
                for n in ns:
                    key = f"{task[0]}|{delay}|{n}"
                    runs.setdefault(key, []).append(one(daemon, task, n, delay))
    with daemon.client() as client:
        slots = client.info().max_concurrent_runs
    return {"runs": runs, "repeats": repeats, "ns": list(ns), "slots": slots}


def report(data: dict[str, Any]) -> str:
    rows = [
        "| task | model reply | N | coverage | wall s (median) | vs N=1 | marginal s per extra "
        "candidate | overhead per candidate ms (median) | model calls |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs: dict[str, list[dict[str, Any]]] = data["runs"]
    base: dict[str, float] = {}
    for key, rs in runs.items():
        task, delay, n = key.split("|")
        wall = statistics.median(r["wall_s"] for r in rs)
        if n == "1":
            base[f"{task}|{delay}"] = wall
        one_wall = base.get(f"{task}|{delay}", wall)
        over = [o for r in rs for o in r["overheads_s"]]
        overhead = f"{statistics.median(over) * 1e3:.0f}" if over else "n/a (single loop)"
        marginal = f"{(wall - one_wall) / (int(n) - 1):.2f}" if n != "1" else "-"
        rows.append(
            f"| {task} | {float(delay):g} s | {n} | {rs[-1]['coverage']} | {wall:.2f} | "
            f"{wall / one_wall:.2f}x | {marginal} | {overhead} | {rs[-1]['calls']} |"
        )
    return "\n".join(
        [
            f"## coder best of N ({data['repeats']} interleaved runs per row; "
            f"bench/coder_candidates.py)",
            "",
            "`coder solve --candidates N` as a subprocess against a real sandboxd (its "
            f"`max_concurrent_runs` = {data['slots']}) and the scripted model; every candidate",
            "does the same work (the same replies, by seed), so the ideal on enough cores is",
            '"vs N=1" = 1.00x. Wall: the whole command (Python start, connect, the candidates,',
            "the full-suite check, the reviewer). Overhead per candidate: its loop's wall time",
            "minus its model replies and test runs (sandbox start and upload, prompts, edits,",
            "trace, and waiting for a test slot).",
            "",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    machine = describe()  # the load average at the start
    d = Daemon(work, "coder-bench-n").start()
    try:
        text = report(measure(d, args.repeats))
        head, _, rest = text.partition("\n\n")
        print("\n".join([head, "", "Machine:", *machine, "", rest]))
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
