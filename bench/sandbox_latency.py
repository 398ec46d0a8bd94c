"""The cost coder pays per test run beside the test itself: a run of `true` in a persistent
sandbox, its jail forked by the fork server vs built by nsjail (the fork server off, as
before it), interleaved in one run.
    python -m bench.sandbox_latency [--iterations N] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.hello_latency import percentile
from bench.machine import describe
from sandboxd.testing import Daemon

SETTLE_S = 0.05
TARGET_MS = 15.0
LABELS = {
    "fork": "sandbox run of `true`, jail forked by the fork server",
    "cold": "sandbox run of `true`, jail built by nsjail (no fork server)",
}


def measure(iterations: int, warmup: int = 5) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemons = {
        "fork": Daemon(work, "sbx-fork").start(),
        "cold": Daemon(work, "sbx-cold", backend={"fork_server": False}).start(),
    }
    samples: dict[str, list[float]] = {key: [] for key in LABELS}
    try:
        clients = {key: d.client() for key, d in daemons.items()}
        boxes = {key: c.create_sandbox() for key, c in clients.items()}
        for i in range(warmup + iterations):
            for key, client in clients.items():
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                result = client.run_in_sandbox(boxes[key].id, command=["true"])
                elapsed = time.perf_counter() - t0
                if result.status != "ok":
                    raise RuntimeError(f"{key}: {result.status} {result.message}")
                if i >= warmup:
                    samples[key].append(elapsed)
        for key, client in clients.items():
            client.delete_sandbox(boxes[key].id)
            client.close()
    finally:
        for daemon in daemons.values():
            daemon.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    rows = ["| what | p50 ms | p90 ms |", "|---|---|---|"]
    for key, label in LABELS.items():
        p50, p90 = statistics.median(samples[key]), percentile(samples[key], 0.9)
        rows.append(f"| {label} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} |")
    fork = statistics.median(samples["fork"]) * 1e3
    cold = statistics.median(samples["cold"]) * 1e3
    n = len(samples["fork"])
    return "\n".join(
        [
            f"## Sandbox run of `true` ({n} interleaved iterations each)",
            "",
            *rows,
            "",
            f"Target (issue 20): ≤ {TARGET_MS:.0f} ms p50; here {fork:.1f} ms forked, "
            f"{cold:.1f} ms with a jail built by nsjail ({fork / cold:.2f}x).",
            "",
        ]
    )


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
