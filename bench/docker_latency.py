"""Hello latency of the Docker backend through the API vs a raw `docker run --rm` of the same
image, interleaved in one run."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.daemon import Daemon

IMAGE = "sandboxd/python:bookworm"
HELLO = 'print("hello")'


def measure(iterations: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(work, "docker-bench", docker={"enabled": True}).start()
    samples: dict[str, list[float]] = {"raw": [], "api": []}
    try:
        with daemon.client() as client:
            for i in range(warmup + iterations):
                t0 = time.perf_counter()
                raw = subprocess.run(
                    ["docker", "run", "--rm", IMAGE, "python3", "-c", HELLO],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                t1 = time.perf_counter()
                result = client.run(code=HELLO, backend="docker")
                t2 = time.perf_counter()
                if raw.stdout != "hello\n" or result.stdout != "hello\n":
                    raise RuntimeError(f"wrong output: {raw.stdout!r} / {result}")
                if i >= warmup:
                    samples["raw"].append(t1 - t0)
                    samples["api"].append(t2 - t1)
    finally:
        daemon.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["raw"])
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs raw docker run |", "|---|---|---|---|"]
    labels = {
        "raw": f"raw `docker run --rm {IMAGE} python3 -c ...` (baseline)",
        "api": "sandboxd HTTP API, docker backend (all limits, seccomp, cap-drop, ro)",
    }
    for key, label in labels.items():
        ordered = sorted(samples[key])
        p50, p90 = statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]
        rows.append(f"| {label} | {p50 * 1e3:.0f} | {p90 * 1e3:.0f} | {p50 / base:.2f}x |")
    n = len(samples["raw"])
    return "\n".join(
        [f"## Docker backend hello latency ({n} interleaved iterations each)", "", *rows, ""]
    )
