"""Driving coder end to end without a model: the scripted server in a thread on loopback, a
copy of an example repository, a config file, and `coder solve` as a subprocess.

coder's tests and `bench/coder_overhead.py` share this one copy, so what the tests prove about
a solve is what the bench measures. It works in a source checkout: the fixtures are
`tests/fixtures/coder/*.json` and the example repositories `examples/*` (`REPO` is the
checkout's root)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from coder.testing.scripted import LOG, STEPS, load_steps, make_app
from sandboxd.testing import Daemon, free_port

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "coder"


class LoopbackServer:
    """An aiohttp app served from a thread of its own on 127.0.0.1 (a free port), for a
    test or a bench that drives a subprocess against it."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)

    def start(self) -> LoopbackServer:
        self.thread.start()

        async def up() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()  # else ResourceWarning: unclosed event loop (an error in tests)


class ScriptedServer(LoopbackServer):
    """coder's scripted OpenAI-compatible server, running in a thread on loopback."""

    def __init__(self, fixture: str, steps: list[dict[str, Any]] | None = None) -> None:
        """The steps of `fixture` (tests/fixtures/coder/NAME.json), or `steps` as given."""
        super().__init__(
            make_app(steps if steps is not None else load_steps(FIXTURES / f"{fixture}.json"))
        )

    def start(self) -> ScriptedServer:
        super().start()
        return self

    @property
    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.app[LOG]
        return list(log)

    @property
    def steps_left(self) -> int:
        return len(self.app[STEPS])


@contextmanager
def scripted(fixture: str, steps: list[dict[str, Any]] | None = None) -> Iterator[ScriptedServer]:
    server = ScriptedServer(fixture, steps).start()
    try:
        yield server
    finally:
        server.stop()


def example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(REPO / "examples" / name, target)
    return target


def write_config(path: Path, **extra: Any) -> Path:
    settings = {
        "model": "writer",
        "reviewer_model": "reviewer",
        "backoff_s": 0.01,
        "cache_dir": str(path.parent / "cache"),
        **extra,
    }
    simple = (str, int, float, bool, type(None))
    lines = [
        f"{k} = {json.dumps(v)}"
        for k, v in settings.items()
        if isinstance(v, simple) or (isinstance(v, list) and all(isinstance(x, simple) for x in v))
    ]
    for k, v in settings.items():  # tables: {"roles": {"security": {...}}}, [{...}] lists
        if isinstance(v, dict):
            for name, table in v.items():
                lines.append(f"[{k}.{name}]")
                lines += [f"{f} = {json.dumps(x)}" for f, x in table.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for table in v:
                lines.append(f"[[{k}]]")
                lines += [f"{f} = {json.dumps(x)}" for f, x in table.items()]
    prices = {"writer": [1.0, 2.0], "reviewer": [1.0, 2.0], "security": [1.0, 2.0]}
    lines += ["[prices]"] + [f"{m} = {json.dumps(p)}" for m, p in prices.items()]
    lines += [
        "[test_limits]",
        "wall_time_s = 60",
        "cpu_time_s = 60",
        "memory_mib = 512",
        "pids = 128",
        "disk_mib = 64",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def coder_env(daemon: Daemon | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SANDBOXD_"))}
    env["OPENAI_API_KEY"] = "scripted"
    if daemon is not None:
        env["SANDBOXD_URL"], env["SANDBOXD_TOKEN"] = daemon.url, daemon.token
    env.update(extra)
    return env


def run_coder(
    *args: str, env: dict[str, str], timeout_s: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coder", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def run_solve(
    repo: Path, server: ScriptedServer, daemon: Daemon | None, *extra: str, **config: Any
) -> subprocess.CompletedProcess[str]:
    """`coder solve` on `repo` against `server`, with a config file of `config`."""
    cfg = write_config(repo.parent / f"{repo.name}.toml", **config)
    args = ["solve", str(repo), "--config", str(cfg), "--base-url", server.url, *extra]
    return run_coder(*args, env=coder_env(daemon))


def solve(
    repo: Path, server: ScriptedServer, daemon: Daemon | None, *extra: str, **config: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`coder solve --json` on `repo` against `server`; the process and its result JSON."""
    patch = str(repo.parent / f"{repo.name}.diff")
    proc = run_solve(repo, server, daemon, "--json", "--patch-out", patch, *extra, **config)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"coder printed no JSON:\n{proc.stdout}\n{proc.stderr}") from None
    return proc, result
