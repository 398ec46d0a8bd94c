"""Soak: many runs, mixed normal and limit-hitting, through one daemon, then a leak check.

Counts errors (a run whose status is not the one its kind must give, or a refused request),
the daemon's RSS growth from after a warm-up to the end, and whatever is left on the host:
sandbox processes, run cgroups, mounts, containers (all must be zero; the warm pool's idle
jails are not leftovers). Every 50th run goes to the Docker backend.
python -m bench.soak [--runs N] [--concurrency C] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.testing import (
    Daemon,
    leftover_cgroups,
    leftover_containers,
    leftover_mounts,
    sandbox_processes,
)

#: (name, request fields, the statuses it may end with); the mix repeats in this order.
KINDS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("hello", {"code": "print('hello')"}, ("ok",)),
    ("hello", {"code": "print('hello')"}, ("ok",)),
    ("bash", {"language": "bash", "code": "echo hi"}, ("ok",)),
    ("exit 3", {"code": "import sys; sys.exit(3)"}, ("failed",)),
    (
        "timeout",
        {"code": "import time; time.sleep(10)", "limits": {"wall_time_s": 0.2}},
        ("timeout",),
    ),
    (
        "memory",
        {"code": "x = bytearray(256 << 20)", "limits": {"memory_mib": 32}},
        ("memory_limit",),
    ),
    (
        "output",
        {"language": "bash", "code": "yes", "limits": {"output_bytes": 4096}},
        ("output_limit",),
    ),
    (
        "cpu",
        {"code": "while True: pass", "limits": {"cpu_time_s": 0.2, "wall_time_s": 5}},
        ("cpu_limit",),
    ),
    (
        "fork bomb",
        {
            "language": "bash",
            "code": "f() { f | f & }; f; sleep 1",
            "limits": {"pids": 16, "wall_time_s": 0.5},
        },
        # bash retries a refused fork after a sleep; a child's SIGCHLD can cut that sleep
        # short, and bash then gives up: `failed`, with the pids note (checked below).
        ("timeout", "failed"),
    ),
    ("hello", {"code": "print('hello')"}, ("ok",)),
]
WARMUP = 50
#: Every DOCKER_EVERY-th run goes to the Docker backend instead (alternately warm and cold).
DOCKER_EVERY = 50
DOCKER_KINDS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("docker hello", {"backend": "docker", "code": "print('hello')"}, ("ok",)),
    (
        "docker timeout",
        {
            "backend": "docker",
            "code": "import time; time.sleep(10)",
            "limits": {"wall_time_s": 0.5, "memory_mib": 128},
        },
        ("timeout",),
    ),
]


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


async def drive(daemon: Daemon, runs: int, concurrency: int, tally: Counter[str]) -> list[str]:
    errors: list[str] = []
    next_index = 0
    async with Client(daemon.url, token=daemon.token) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < runs:
                i, next_index = next_index, next_index + 1
                if i % DOCKER_EVERY == DOCKER_EVERY // 2:
                    name, fields, expected = DOCKER_KINDS[(i // DOCKER_EVERY) % 2]
                else:
                    name, fields, expected = KINDS[i % len(KINDS)]
                try:
                    result = await client.run(**fields)
                except SandboxdError as exc:
                    errors.append(f"run {i} ({name}): {exc.code}: {exc.message}")
                    continue
                tally[name] += 1
                unexplained = (
                    name == "fork bomb"
                    and result.status == "failed"
                    and ("pids limit" not in (result.message or ""))
                )
                if result.status not in expected or unexplained:
                    errors.append(f"run {i} ({name}): {result.status}, expected {expected}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


def held_slot_s(runs: int) -> float:
    """Seconds of run slots the mix holds by its own limits alone (timeouts wait out their
    wall time, cpu runs burn theirs): with C in flight, no daemon can do it in less than
    this over C."""
    held = 0.0
    for i in range(runs):
        if i % DOCKER_EVERY == DOCKER_EVERY // 2:
            fields = DOCKER_KINDS[(i // DOCKER_EVERY) % 2][1]
        else:
            fields = KINDS[i % len(KINDS)][1]
        limits = fields.get("limits", {})
        if "sleep" in fields["code"] or "sleep 1" in fields["code"]:
            held += limits.get("wall_time_s", 0.0)
        elif "while True" in fields["code"]:
            held += limits.get("cpu_time_s", 0.0)
    return held


def measure(runs: int, concurrency: int = 4, *, fork_server: bool = True) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(
        work,
        "soak",
        max_concurrent_runs=concurrency,
        docker={"enabled": True},
        backend={"fork_server": fork_server},
    ).start()
    assert daemon.proc is not None
    tally: Counter[str] = Counter()
    try:
        warm_errors = asyncio.run(drive(daemon, min(WARMUP, runs), concurrency, Counter()))
        rss_start = rss_mib(daemon.proc.pid)
        t0 = time.perf_counter()
        errors = warm_errors + asyncio.run(drive(daemon, runs, concurrency, tally))
        elapsed = time.perf_counter() - t0
        rss_end = rss_mib(daemon.proc.pid)
        deadline = time.monotonic() + 10  # cleanup finishes just after the last response
        while time.monotonic() < deadline and (
            leftover_cgroups(daemon.cgroup_parent) or leftover_mounts(daemon.state_dir)
        ):
            time.sleep(0.05)
        leaks = {
            "processes": len(sandbox_processes(cgroup_parent=daemon.cgroup_parent)),
            "cgroups": len(leftover_cgroups(daemon.cgroup_parent)),
            "mounts": len(leftover_mounts(daemon.state_dir)),
            "containers": len(leftover_containers(daemon.state_dir)),
        }
    finally:
        daemon.stop()
    after_stop = {
        "processes": len(sandbox_processes(include_warm=True, cgroup_parent=daemon.cgroup_parent)),
        "cgroups": len(leftover_cgroups(daemon.cgroup_parent, include_warm=True)),
        "mounts": len(leftover_mounts(daemon.state_dir, include_warm=True)),
        "containers": len(leftover_containers(daemon.state_dir, include_warm=True)),
    }
    return {
        "fork_server": fork_server,
        "runs": runs,
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "errors": errors,
        "tally": dict(tally),
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "leaks": leaks,
        "after_stop": after_stop,
    }


def report(*measured: dict[str, Any]) -> str:
    """One column per soak (the same mix, with and without the fork server)."""
    first = measured[0]
    mix = ", ".join(f"{name} {count}" for name, count in sorted(first["tally"].items()))
    names = [
        ("fork server" if d["fork_server"] else "no fork server (before issue 20)")
        for d in measured
    ]
    cells: dict[str, list[str]] = {}
    for data in measured:
        growth = data["rss_end_mib"] - data["rss_start_mib"]
        leaks, after = data["leaks"], data["after_stop"]
        row = {
            "errors (wrong status or refused)": f"{len(data['errors'])}",
            "runs per second": f"{data['runs'] / data['elapsed_s']:.1f}",
            "daemon RSS after warm-up / at end, MiB": f"{data['rss_start_mib']:.1f} / "
            f"{data['rss_end_mib']:.1f} (growth {growth:+.1f})",
            "leaked sandbox processes / run cgroups / mounts / containers": (
                f"{leaks['processes']} / {leaks['cgroups']} / {leaks['mounts']} / "
                f"{leaks['containers']}"
            ),
            "left after the daemon stopped (incl. warm pools): processes / cgroups / mounts / "
            "containers": f"{after['processes']} / {after['cgroups']} / {after['mounts']} / "
            f"{after['containers']}",
        }
        for key, value in row.items():
            cells.setdefault(key, []).append(value)
    floor = first["runs"] / (held_slot_s(first["runs"]) / first["concurrency"])
    lines = [
        f"## Soak ({first['runs']} runs, {first['concurrency']} in flight)",
        "",
        f"Mix: {mix}.",
        "",
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *[f"| {key} | " + " | ".join(values) + " |" for key, values in cells.items()],
        "",
        f"The mix's own limits (its timeouts' wall time, its cpu runs' cpu time) hold "
        f"{first['concurrency']} slots long enough that no daemon could exceed "
        f"{floor:.0f} runs per second with it.",
        "",
    ]
    for data, name in zip(measured, names, strict=True):
        if data["errors"]:
            lines += [f"First errors ({name}):", "", *[f"- {e}" for e in data["errors"][:10]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = report(
        measure(args.runs, args.concurrency),
        measure(args.runs, args.concurrency, fork_server=False),
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
