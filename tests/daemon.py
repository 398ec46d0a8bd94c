"""Start a real sandboxd daemon (a subprocess, real HTTP on loopback) for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandboxd.client import Client, SyncClient

STARTUP_S = 30.0
#: The uid ranges of every daemon this process started (leftover checks look at those only:
#: other daemons may share the host).
SESSION_UID_BASES: set[int] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else json.dumps(key)


def _toml_lines(settings: dict[str, Any], prefix: str = "") -> list[str]:
    lines = [
        f"{_key(k)} = {_toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)
    ]
    for key, value in settings.items():
        if isinstance(value, dict):
            lines += [f"[{prefix}{key}]", *_toml_lines(value, f"{prefix}{key}.")]
    return lines


def write_toml(path: Path, settings: dict[str, Any]) -> None:
    path.write_text("\n".join(_toml_lines(settings)) + "\n")


class Daemon:
    """A `sandboxd serve` process with its own state dir, port and cgroup parent."""

    def __init__(self, workdir: Path, name: str = "d", **settings: Any) -> None:
        self.workdir = workdir
        self.state_dir = workdir / f"state-{name}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        backend = {"cgroup_parent": f"sandboxd-test-{os.getpid()}-{name}"}
        backend.update(settings.pop("backend", {}))
        self.cgroup_root = backend["cgroup_parent"]
        self.settings = {"state_dir": str(self.state_dir), **settings, "backend": backend}
        self.log = workdir / f"daemon-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self, env: dict[str, str] | None = None, wrapper: Sequence[str] = ()) -> Daemon:
        """Start it; `wrapper` is a command that execs the daemon's argv, which follows it
        (e.g. `capsh --drop=... -- -c 'exec "$0" "$@"'`: a daemon without a capability)."""
        config = self.workdir / f"config-{os.getpid()}-{self.port}.toml"
        write_toml(config, self.settings)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *wrapper,
                    sys.executable,
                    "-m",
                    "sandboxd",
                    "serve",
                    "--config",
                    str(config),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandboxd exited at startup:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        self.token = (self.state_dir / "admin.token").read_text().strip()
                        SESSION_UID_BASES.add(self.uid_base)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sandboxd did not become healthy:\n{self.log.read_text()}")

    def identity(self) -> dict[str, Any]:
        """The daemon's identity.json: its id and uid_base (kept across restarts)."""
        data: dict[str, Any] = json.loads((self.state_dir / "identity.json").read_text())
        return data

    @property
    def cgroup_parent(self) -> str:
        """The daemon's own cgroup (below the root its settings name)."""
        return f"{self.cgroup_root}/{self.identity()['id']}"

    @property
    def uid_base(self) -> int:
        return int(self.identity()["uid_base"])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(
        self,
        path: str,
        data: bytes | None = None,
        method: str | None = None,
        token: str | None = None,
    ) -> urllib.request.Request:
        """An authenticated urllib request (the admin token unless `token` is given)."""
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        return urllib.request.Request(self.url + path, data=data, method=method, headers=headers)

    def client(self, token: str | None = None) -> SyncClient:
        return SyncClient(self.url, token=token if token is not None else self.token)

    def aclient(self, token: str | None = None) -> Client:
        return Client(self.url, token=token if token is not None else self.token)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`sandboxd ARGS --state-dir <this daemon's>` (token and audit commands)."""
        return subprocess.run(
            [sys.executable, "-m", "sandboxd", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def make_token(self, tenant: str, *scopes: str) -> str:
        args = ["token", "create", "--tenant", tenant]
        for scope in scopes:
            args += ["--scope", scope]
        proc = self.cli(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=timeout_s)
