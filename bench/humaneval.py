"""HumanEval: the 164 canonical solutions with their tests, at concurrency 2, through the
sandboxd API (warm pool) vs a pool of two bare subprocesses vs AutoGen's local executor.

Every program must pass on every contender (a failure aborts the bench). Figures are the
wall time of the whole set, as ratios against the bare subprocess pool, in the same run.
    python -m bench.humaneval [--problems N] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.machine import BARE_ENV
from bench.peers import PeerWorker
from sandboxd.client import Client
from sandboxd.testing import Daemon

CONCURRENCY = 2
JAIL_PYTHON = "/usr/bin/python3"


def machine_busy_s() -> float:
    """Cpu seconds the whole machine has spent busy (every core, every process, the kernel):
    with 2 in flight on 2 cores, what a contender spends per problem bounds its rate."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def programs(problems: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(task id, program): prompt + canonical solution + tests + the check call."""
    return [
        (
            p["task_id"],
            f"{p['prompt']}{p['canonical_solution']}\n\n{p['test']}\n\ncheck({p['entry_point']})\n",
        )
        for p in problems
    ]


def run_bare(progs: list[tuple[str, str]], work: Path) -> list[str]:
    """Failures of a pool of CONCURRENCY bare interpreters, one file per program."""

    def one(item: tuple[str, str]) -> str | None:
        task, code = item
        path = work / (task.replace("/", "_") + ".py")
        path.write_text(code)
        done = subprocess.run(
            [JAIL_PYTHON, str(path)], capture_output=True, timeout=60, env=BARE_ENV
        )
        return None if done.returncode == 0 else task

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return [t for t in pool.map(one, progs) if t is not None]


async def run_api(progs: list[tuple[str, str]], daemon: Daemon) -> list[str]:
    """Failures through the API, CONCURRENCY requests in flight."""
    failures: list[str] = []
    queue = list(progs)
    async with Client(daemon.url, token=daemon.token) as client:

        async def worker() -> None:
            while queue:
                task, code = queue.pop()
                result = await client.run(code=code)
                if result.status != "ok":
                    failures.append(f"{task}: {result.status} {result.stderr[-300:]}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return failures


def run_autogen(progs: list[tuple[str, str]], peer: PeerWorker) -> list[str]:
    failures = []
    for i in range(0, len(progs), CONCURRENCY):
        batch = progs[i : i + CONCURRENCY]
        for (task, _), result in zip(batch, peer.autogen(*(c for _, c in batch)), strict=True):
            if result["exit_code"] != 0:
                failures.append(task)
    return failures


def measure(limit: int | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(work, "humaneval", backend={"pool": {"min_size": CONCURRENCY}}).start()
    forked = Daemon(work, "humaneval-fork", backend={"pool": {"enabled": False}}).start()
    nothing = {"pool": {"min_size": CONCURRENCY}, "fork_server": False}
    before = Daemon(work, "humaneval-before", backend=nothing).start()
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        with PeerWorker() as peer:
            progs = programs(peer.humaneval_problems())[:limit]
            runners = {
                "bare": lambda: run_bare(progs, work),
                "api": lambda: asyncio.run(run_api(progs, daemon)),
                "api_fork": lambda: asyncio.run(run_api(progs, forked)),
                "api_before": lambda: asyncio.run(run_api(progs, before)),
                "autogen": lambda: run_autogen(progs, peer),
            }
            for name, runner in runners.items():
                t0, busy0 = time.perf_counter(), machine_busy_s()
                failures = runner()
                times[name] = time.perf_counter() - t0
                cpu[name] = machine_busy_s() - busy0
                if failures:
                    raise RuntimeError(f"{name}: {len(failures)} failed: {failures[:5]}")
    finally:
        for d in (daemon, forked, before):
            d.stop()
    return {"n": len(progs), "times": times, "cpu": cpu}


def report(data: dict[str, Any]) -> str:
    n, times = data["n"], data["times"]
    base = times["bare"]
    labels = {
        "bare": f"bare `{JAIL_PYTHON} file.py`, pool of {CONCURRENCY} (baseline)",
        "api": f"sandboxd HTTP API, nsjail, warm pool and fork server (the defaults), "
        f"{CONCURRENCY} in flight",
        "api_fork": f"sandboxd HTTP API, nsjail, no pool: every jail forked, "
        f"{CONCURRENCY} in flight",
        "api_before": f"sandboxd HTTP API, nsjail, warm pool, no fork server (before issue 20), "
        f"{CONCURRENCY} in flight",
        "autogen": f"AutoGen `LocalCommandLineCodeExecutor`, {CONCURRENCY} at a time",
    }
    cpu = data.get("cpu", {})
    rows = [
        "| what | passed | total s | ms per problem | ratio vs bare | machine cpu ms per problem |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in labels.items():
        t = times[key]
        used = f"{cpu[key] / n * 1e3:.1f}" if key in cpu else "-"
        rows.append(
            f"| {label} | {n}/{n} | {t:.2f} | {t / n * 1e3:.1f} | {t / base:.2f}x | {used} |"
        )
    best = min(times["api"], times["api_fork"])
    rows += [
        "",
        f"Targets (issue 20): ≤ 0.6x AutoGen's local executor and ≤ 1.1x the bare pool; here "
        f"{times['api'] / times['autogen']:.2f}x and {times['api'] / base:.2f}x with the "
        f"defaults, {times['api_fork'] / times['autogen']:.2f}x and "
        f"{times['api_fork'] / base:.2f}x with every jail forked "
        f"(best {best / times['autogen']:.2f}x and {best / base:.2f}x).",
    ]
    return "\n".join([f"## HumanEval canonical solutions ({n} problems)", "", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = report(measure(args.problems))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
