"""Hello latency of the Docker backend through the API (warm containers, and without them)
vs a raw `docker run --rm` of the same image, interleaved in one run."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sandboxd.client import SyncClient
from tests.daemon import Daemon

IMAGE = "sandboxd/python:bookworm"
HELLO = 'print("hello")'
IDLE_WAIT_S = 60.0
LABELS = {
    "raw": f"raw `docker run --rm {IMAGE} python3 -c ...` (baseline)",
    "cold": "sandboxd HTTP API, docker backend, no pool (all limits, seccomp, cap-drop, ro)",
    "warm": "sandboxd HTTP API, docker backend, warm containers",
}


def wait_idle(client: SyncClient) -> None:
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        stats = client.info().warm_pools["docker/python"]
        if stats.ready >= 1 and stats.preparing == 0:
            return
        time.sleep(0.005)
    raise RuntimeError("the warm containers did not refill")


def measure(iterations: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    warm = Daemon(work, "docker-warm", docker={"enabled": True}).start()
    cold = Daemon(work, "docker-cold", docker={"enabled": True, "pool": {"enabled": False}}).start()
    samples: dict[str, list[float]] = {key: [] for key in LABELS}
    try:
        with warm.client() as pooled, cold.client() as unpooled:
            for i in range(warmup + iterations):
                times = {}
                t0 = time.perf_counter()
                raw = subprocess.run(
                    ["docker", "run", "--rm", IMAGE, "python3", "-c", HELLO],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                times["raw"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                plain = unpooled.run(code=HELLO, backend="docker")
                times["cold"] = time.perf_counter() - t0
                wait_idle(pooled)
                t0 = time.perf_counter()
                quick = pooled.run(code=HELLO, backend="docker")
                times["warm"] = time.perf_counter() - t0
                outputs = {raw.stdout, plain.stdout, quick.stdout}
                if outputs != {"hello\n"}:
                    raise RuntimeError(f"wrong output: {outputs}")
                if i >= warmup:
                    for key, value in times.items():
                        samples[key].append(value)
            hits = pooled.info().warm_pools["docker/python"].hits
        if hits < warmup + iterations:
            raise RuntimeError(f"only {hits} of the pooled runs used a warm container")
    finally:
        warm.stop()
        cold.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["raw"])
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs raw docker run |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        ordered = sorted(samples[key])
        p50, p90 = statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]
        rows.append(f"| {label} | {p50 * 1e3:.0f} | {p90 * 1e3:.0f} | {p50 / base:.2f}x |")
    n = len(samples["raw"])
    return "\n".join(
        [f"## Docker backend hello latency ({n} interleaved iterations each)", "", *rows, ""]
    )
