"""What MCP adds to a run: `run_code` of `print("hello")` through the SDK's own client, over
streamable HTTP (`/mcp`) and over stdio (`sandboxd mcp`), vs the same run through the Python
client (`POST /v1/runs`, the baseline), interleaved, one connection each kept open. Before
each call the bench waits until the warm pool is refilled and idle, then 50 ms, as
bench/hello_latency.py does: every contender gets a ready jail.
    python -m bench.mcp_latency [--iterations N] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client as McpClient
from mcp import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from sandboxd.client import Client
from sandboxd.testing import Daemon

CODE = 'print("hello")'
SETTLE_S = 0.05
IDLE_WAIT_S = 10.0


async def wait_idle(client: Client, name: str = "nsjail/python") -> None:
    """Until the pool has a ready jail and prepares nothing (bounded)."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        stats = (await client.info()).warm_pools[name]
        if stats.ready >= 1 and stats.preparing == 0:
            await asyncio.sleep(SETTLE_S)
            return
        await asyncio.sleep(0.002)
    raise RuntimeError(f"the warm pool {name} did not refill")


async def _measure(daemon: Daemon, iterations: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"api": [], "http": [], "stdio": []}
    http = httpx2.AsyncClient(headers=daemon.auth, timeout=60)
    env = {"PATH": os.environ["PATH"], "SANDBOXD_TOKEN": daemon.token}
    argv = ["-m", "sandboxd", "mcp", "--url", daemon.url]
    stdio = StdioServerParameters(command=sys.executable, args=argv, env=env)
    async with (
        Client(daemon.url, token=daemon.token) as api,
        http,
        McpClient(streamable_http_client(f"{daemon.url}/mcp", http_client=http)) as over_http,
        McpClient(stdio) as over_stdio,
    ):

        async def via_api() -> str:
            return (await api.run(code=CODE)).status

        async def via(client: McpClient) -> str:
            result = await client.call_tool("run_code", {"code": CODE})
            assert isinstance(result.structured_content, dict)
            return str(result.structured_content["status"])

        calls = {"api": via_api, "http": lambda: via(over_http), "stdio": lambda: via(over_stdio)}
        for i in range(warmup + iterations):
            for name, call in calls.items():
                await wait_idle(api)
                t0 = time.perf_counter()
                status = await call()
                elapsed = time.perf_counter() - t0
                if status != "ok":
                    raise RuntimeError(f"{name}: the run's status is {status}")
                if i >= warmup:
                    samples[name].append(elapsed)
    return samples


def measure(iterations: int = 100, warmup: int = 5) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    daemon = Daemon(work, "mcp-bench").start()
    try:
        return asyncio.run(_measure(daemon, iterations, warmup))
    finally:
        daemon.stop()


LABELS = {
    "api": "Python client, `POST /v1/runs` (baseline)",
    "http": "MCP `run_code` over streamable HTTP (`/mcp`, SDK client)",
    "stdio": "MCP `run_code` over stdio (`sandboxd mcp`, SDK client)",
}


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def report(samples: dict[str, Any]) -> str:
    base = statistics.median(samples["api"])
    n = len(samples["api"])
    rows = ["| what | p50 ms | p90 ms | p50 ratio vs API |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        values = samples[key]
        p50 = statistics.median(values)
        rows.append(
            f"| {label} | {p50 * 1e3:.1f} | {_pct(values, 90) * 1e3:.1f} | {p50 / base:.2f}x |"
        )
    title = f'## MCP latency: `run_code` of print("hello") ({n} interleaved iterations each)'
    return "\n".join([title, "", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    text = report(measure(args.iterations))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
