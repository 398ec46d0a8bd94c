"""Hello latency of the Docker backend through the API (warm containers, and without them)
vs a raw `docker run --rm` of the same image, interleaved in one run: python (the `python`
pool), bash (the `exec` pool) and node (the `node` pool, in its own image)."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sandboxd.client import SyncClient
from sandboxd.testing import Daemon

IMAGE = "sandboxd/python:bookworm"
HELLO = 'print("hello")'
IDLE_WAIT_S = 60.0
LABELS = {
    "raw": "raw `docker run --rm {image} {argv}` (baseline)",
    "cold": "sandboxd HTTP API, docker backend, no pool (all limits, seccomp, cap-drop, ro)",
    "warm": "sandboxd HTTP API, docker backend, warm containers (`{pool}` pool)",
}
NODE_IMAGE = "sandboxd/node:bookworm"
NODE_HELLO = 'console.log("hello")'
#: language: (code, image, raw docker run's command, pool, prefix of its sample keys)
CASES = {
    "python": (HELLO, IMAGE, ["python3", "-c", HELLO], "docker/python", ""),
    "bash": ("echo hello", IMAGE, ["bash", "-c", "echo hello"], "docker/exec", "bash_"),
    "node": (NODE_HELLO, NODE_IMAGE, ["node", "-e", NODE_HELLO], "docker/node", "node_"),
}


def wait_idle(client: SyncClient, pool: str) -> None:
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        stats = client.info().warm_pools[pool]
        if stats.ready >= 1 and stats.preparing == 0:
            return
        time.sleep(0.005)
    raise RuntimeError(f"the warm containers of {pool} did not refill")


def measure(iterations: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    warm = Daemon(work, "docker-warm", docker={"enabled": True}).start()
    cold = Daemon(work, "docker-cold", docker={"enabled": True, "pool": {"enabled": False}}).start()
    samples: dict[str, list[float]] = {
        prefix + key: [] for *_, prefix in CASES.values() for key in LABELS
    }
    try:
        with warm.client() as pooled, cold.client() as unpooled:
            for i in range(warmup + iterations):
                times = {}
                for language, (code, image, argv, pool, prefix) in CASES.items():
                    t0 = time.perf_counter()
                    raw = subprocess.run(
                        ["docker", "run", "--rm", image, *argv],
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    times[prefix + "raw"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    plain = unpooled.run(language=language, code=code, backend="docker")
                    times[prefix + "cold"] = time.perf_counter() - t0
                    wait_idle(pooled, pool)
                    t0 = time.perf_counter()
                    quick = pooled.run(language=language, code=code, backend="docker")
                    times[prefix + "warm"] = time.perf_counter() - t0
                    outputs = {raw.stdout, plain.stdout, quick.stdout}
                    if outputs != {"hello\n"}:
                        raise RuntimeError(f"{language}: wrong output: {outputs}")
                if i >= warmup:
                    for key, value in times.items():
                        samples[key].append(value)
            pools = pooled.info().warm_pools
        for *_, pool, _ in CASES.values():
            if pools[pool].hits < warmup + iterations:
                raise RuntimeError(f"only {pools[pool].hits} runs used a container of {pool}")
    finally:
        warm.stop()
        cold.stop()
    return samples


def report(samples: dict[str, list[float]]) -> str:
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs raw docker run |", "|---|---|---|---|"]
    for language, (_, image, argv, pool, prefix) in CASES.items():
        base = statistics.median(samples[prefix + "raw"])
        for key, label in LABELS.items():
            ordered = sorted(samples[prefix + key])
            p50, p90 = statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]
            shown = " ".join(argv[:2]) + " ..."
            what = f"{language}: " + label.format(image=image, argv=shown, pool=pool)
            rows.append(f"| {what} | {p50 * 1e3:.0f} | {p90 * 1e3:.0f} | {p50 / base:.2f}x |")
    n = len(samples["raw"])
    return "\n".join(
        [f"## Docker backend hello latency ({n} interleaved iterations each)", "", *rows, ""]
    )
