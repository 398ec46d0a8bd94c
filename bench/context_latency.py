"""Interpreter contexts: the latency of `execute("1+1")` in a warm context through the HTTP
API, against a bare Jupyter kernel on the host (no jail, no daemon: jupyter_client straight to
Debian's ipykernel over loopback TCP) and the HTTP floor (`GET /healthz`), in the same run,
interleaved. A run in the same sandbox (warm pool) shows what a context saves.

The target (issue 19): under 5 ms p50 through the HTTP API.

python -m bench.context_latency [--iterations N]
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from sandboxd.testing import Daemon, docker_problem

LABELS = {
    "bare": "bare ipykernel on the host, jupyter_client `execute_interactive('1+1')` "
    "(baseline: no jail, no daemon)",
    "context": "sandboxd HTTP API, nsjail, `execute('1+1')` in a warm context",
    "docker": "sandboxd HTTP API, Docker, `execute('1+1')` in a warm context",
    "healthz": "sandboxd HTTP API, `GET /healthz` (the HTTP floor: no token, no audit)",
    "get": "sandboxd HTTP API, `GET` of the context (token lookup and audit record, no kernel)",
    "run": "sandboxd HTTP API, nsjail, a run `print(1+1)` in the same sandbox (warm pool)",
}


class BareKernel:
    """Debian's ipykernel started on the host by hand, and jupyter_client's blocking client."""

    def __init__(self, work: Path) -> None:
        path, _ = write_connection_file(str(work / "bare-kernel.json"), ip="127.0.0.1")
        self.proc = subprocess.Popen(  # fixed argv
            ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
        )
        self.client = BlockingKernelClient(connection_file=path)
        self.client.load_connection_file()
        self.client.start_channels(hb=False)
        deadline = time.monotonic() + 60
        while True:  # until it answers (its first answer may take a few seconds)
            self.client.kernel_info()
            try:
                self.client.get_shell_msg(timeout=1)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare kernel did not answer") from None
        time.sleep(1)  # let late kernel_info replies arrive and be drained below
        while True:
            try:
                self.client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                break

    def execute(self) -> None:
        reply = self.client.execute_interactive("1+1", timeout=30, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the bare kernel answered {reply['content']}")

    def close(self) -> None:
        self.client.stop_channels()
        self.proc.kill()
        self.proc.wait()


def measure(iterations: int = 200) -> dict[str, Any]:
    """Samples of each step in LABELS (seconds), and `inner`: the daemon's own account of
    each execution (`wall_time_s`: from sending it to the kernel to its last message)."""
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    docker = docker_problem() is None
    daemon = Daemon(work, "context-bench", docker={"enabled": docker}).start()
    bare = BareKernel(work)
    data: dict[str, Any] = {key: [] for key in (*LABELS, "inner")}
    data["docker_problem"] = None if docker else docker_problem()
    data["iterations"] = iterations
    try:
        with daemon.client() as c:
            sandbox = c.create_sandbox(limits={"disk_mib": 16}).id
            ctx = c.create_context(sandbox).id

            def context() -> None:
                result = c.execute(sandbox, ctx, "1+1")
                if result.status != "ok" or result.results[0].data != "2":
                    raise RuntimeError(f"the context answered {result}")
                data["inner"].append(result.wall_time_s)

            if docker:
                box = c.create_sandbox(backend="docker", limits={"disk_mib": 16}).id
                in_docker = c.create_context(box).id

            def docker_context() -> None:
                result = c.execute(box, in_docker, "1+1")
                if result.status != "ok" or result.results[0].data != "2":
                    raise RuntimeError(f"the Docker context answered {result}")

            def run() -> None:
                if c.run_in_sandbox(sandbox, code="print(1+1)").stdout != "2\n":
                    raise RuntimeError("the run did not print 2")

            steps: dict[str, Callable[[], object]] = {
                "bare": bare.execute,
                "context": context,
                "docker": docker_context,
                "healthz": c.health,
                "get": lambda: c.get_context(sandbox, ctx),
                "run": run,
            }
            if not docker:
                del steps["docker"]
            for i in range(iterations + 5):  # the first few are warm-ups
                for key, step in steps.items():
                    t0 = time.perf_counter()
                    step()
                    if i >= 5:
                        data[key].append(time.perf_counter() - t0)
            c.delete_sandbox(sandbox)
            if docker:
                c.delete_sandbox(box)
    finally:
        bare.close()
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return data


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def report(data: dict[str, Any]) -> str:
    base = statistics.median(data["bare"])
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs bare kernel |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        if not data[key]:
            rows.append(f"| {label} | not measured: {data['docker_problem']} | | |")
            continue
        p50 = statistics.median(data[key])
        rows.append(
            f"| {label} | {p50 * 1e3:.2f} | {_p(data[key], 0.9) * 1e3:.2f} | {p50 / base:.2f}x |"
        )
    inner = statistics.median(data["inner"]) * 1e3
    note = (
        f"Of a context's execution, {inner:.2f} ms p50 is the kernel's round trip as the daemon "
        "times it (the request to the jailed ipykernel and its messages back); the rest is "
        "HTTP, the token lookup and the audit record, as the `GET` row shows."
    )
    return "\n".join(
        [
            f"## Interpreter context latency ({data['iterations']} interleaved iterations each)",
            "",
            *rows,
            "",
            note,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    print(report(measure(args.iterations)))


if __name__ == "__main__":
    main()
