"""Hello-world latency: a run through the sandboxd HTTP API vs a bare interpreter start.

Both are measured in the same run, interleaved, so that the machine's noise hits both alike;
figures are quoted as ratios against the bare baseline. Usage:
    python -m bench.hello_latency [--iterations N] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.machine import describe
from tests.daemon import Daemon

HELLO = 'print("hello")'
JAIL_PYTHON = "/usr/bin/python3"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(iterations: int, warmup: int = 5) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    workdir.chmod(0o711)
    daemon = Daemon(workdir, "bench").start()
    samples: dict[str, list[float]] = {"bare": [], "api": []}
    try:
        with daemon.client() as client:
            for i in range(warmup + iterations):
                t0 = time.perf_counter()
                bare = subprocess.run([JAIL_PYTHON, "-c", HELLO], capture_output=True, text=True)
                t1 = time.perf_counter()
                result = client.run(code=HELLO)
                t2 = time.perf_counter()
                if bare.stdout != "hello\n" or result.stdout != "hello\n":
                    raise RuntimeError(f"wrong output: {bare.stdout!r} / {result}")
                if i >= warmup:
                    samples["bare"].append(t1 - t0)
                    samples["api"].append(t2 - t1)
    finally:
        daemon.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["bare"])
    rows = [
        "| what | p50 ms | p90 ms | p50 ratio vs bare |",
        "|---|---|---|---|",
    ]
    labels = {
        "bare": f"bare `{JAIL_PYTHON} -c 'print(\"hello\")'` as a subprocess (baseline)",
        "api": "sandboxd HTTP API, nsjail backend, no warm pool",
    }
    for key, label in labels.items():
        p50, p90 = statistics.median(samples[key]), percentile(samples[key], 0.9)
        rows.append(f"| {label} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {p50 / base:.2f}x |")
    n = len(samples["bare"])
    return "\n".join([f"## Hello latency ({n} interleaved iterations each)", "", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = "\n".join(["## Machine", *describe(), "", report(measure(args.iterations))])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
