"""The one harness that starts a real sandboxd (a subprocess, real HTTP on loopback): for the
tests, the benches, and coder's own daemon when none is configured. One copy of the start,
health and token logic, so what the tests prove about a daemon's start is what coder does.
It imports only the client and the standard library: nothing of tests/ nor of the daemon's
internals. Below the harness, the host checks for what a daemon may leave behind (sandbox
processes, mounts, cgroups, containers), which the tests assert on and the soak bench counts."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxd.client import Client, SyncClient
from sandboxd.models import AuditRecord

if TYPE_CHECKING:
    import psutil

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


def read_admin_token(state_dir: Path) -> str | None:
    """The admin token a daemon writes into its state dir once it is up."""
    try:
        return (state_dir / "admin.token").read_text().strip() or None
    except OSError:
        return None


def _backends_shorthand(settings: dict[str, Any]) -> dict[str, Any]:
    """`backend={...}` (the nsjail backend's settings, plus the daemon-wide `cgroup_parent`
    and `uid_base`) and `docker={...}` (adds a Docker backend unless `"enabled": False`) are
    a test's shorthand for `backends={"nsjail": ..., "docker": ...}`."""
    settings = dict(settings)
    nsjail = dict(settings.pop("backend", {}))
    for daemon_wide in ("cgroup_parent", "uid_base"):
        if daemon_wide in nsjail:
            settings[daemon_wide] = nsjail.pop(daemon_wide)
    docker = dict(settings.pop("docker", {"enabled": False}))
    if "backends" not in settings and (nsjail or docker.get("enabled", True)):
        backends: dict[str, Any] = {"nsjail": nsjail}
        if docker.pop("enabled", True):
            backends["docker"] = docker
        settings["backends"] = backends
    return settings


class DaemonFailed(RuntimeError):
    """The daemon did not come up: it exited (`returncode` set) or was not healthy in time
    (`returncode` None). The message carries its whole log."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


class Daemon:
    """A `sandboxd serve` process with its own state dir, port and (for tests) cgroup parent.

    `state_dir` and `log` default to names under `workdir`; an explicit `state_dir` is given
    on the command line (`--state-dir`), as a user would. `test_cgroup=False` leaves the
    daemon in the host's default cgroup parent (coder's own daemon is not a test's).
    `token_reader` reads the admin token from the state dir."""

    def __init__(
        self,
        workdir: Path,
        name: str = "d",
        *,
        state_dir: Path | None = None,
        log: Path | None = None,
        test_cgroup: bool = True,
        token_reader: Callable[[Path], str | None] = read_admin_token,
        **settings: Any,
    ) -> None:
        self.workdir = workdir
        self.state_flag = state_dir is not None
        self.state_dir = state_dir or workdir / f"state-{name}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if test_cgroup:
            settings.setdefault("cgroup_parent", f"sandboxd-test-{os.getpid()}-{name}")
        self.settings = _backends_shorthand(settings)
        self.cgroup_root = self.settings.get("cgroup_parent", "sandboxd")
        if not self.state_flag:
            self.settings = {"state_dir": str(self.state_dir), **self.settings}
        self.log = log or workdir / f"daemon-{name}.log"
        self.read_token = token_reader
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def argv(self, config: Path) -> list[str]:
        argv = [sys.executable, "-m", "sandboxd", "serve", "--config", str(config)]
        argv += ["--port", str(self.port)]
        return argv + (["--state-dir", str(self.state_dir)] if self.state_flag else [])

    def start(
        self,
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        timeout_s: float = STARTUP_S,
    ) -> Daemon:
        """Start it and wait until it answers `/healthz` and its admin token is readable;
        `wrapper` is a command that execs the daemon's argv, which follows it (e.g.
        `capsh --drop=... -- -c 'exec "$0" "$@"'`: a daemon without a capability). Raises
        DaemonFailed (with the log) when it exits or is not healthy within `timeout_s`."""
        config = self.workdir / f"config-{os.getpid()}-{self.port}.toml"
        write_toml(config, self.settings)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*wrapper, *self.argv(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (code := self.proc.poll()) is not None:
                raise DaemonFailed(f"sandboxd exited at startup:\n{self._log_text()}", code)
            if self._ready():
                SESSION_UID_BASES.add(self.uid_base)
                return self
            time.sleep(0.05)
        self.stop()
        raise DaemonFailed(f"sandboxd did not become healthy:\n{self._log_text()}", None)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
        except OSError:
            return False
        token = self.read_token(self.state_dir)
        if token:
            self.token = token
        return bool(token)

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

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
        if proc.returncode != 0:
            raise RuntimeError(f"sandboxd token create failed: {proc.stderr}")
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


#: The name prefix of a warm pool's jails and containers (idle ones are not leftovers).
WARM_PREFIX = "warm_"
#: A fork server's cgroup (and run directory), kept for the daemon's life as warm jails are.
FORK_SERVER_PREFIX = "warm_forkserver_"


@functools.cache
def docker_problem() -> str | None:
    """Why the Docker backend cannot run here, or None (asked once per process)."""
    import shutil

    if shutil.which("docker") is None:
        return "no docker client"
    try:
        proc = subprocess.run(
            ["docker", "image", "inspect", "sandboxd/python:bookworm", "sandboxd/node:bookworm"],
            capture_output=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    return None if proc.returncode == 0 else "engine or sandboxd images missing"


def sandbox_processes(
    *,
    include_warm: bool = False,
    cgroup_parent: str | None = None,
    uid_bases: Collection[int] | None = None,
) -> list[psutil.Process]:
    """Host processes running as a run-slot uid of the daemons this session started (or of
    `uid_bases`): there must be none between runs. Not the idle jails of a warm pool unless
    `include_warm`; only those of one daemon's cgroups if `cgroup_parent` is given."""
    import psutil

    from sandboxd.settings import UID_SPAN  # a constant; the import stays out of coder's way

    bases = SESSION_UID_BASES if uid_bases is None else uid_bases
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if not (uids and uids.real - uids.real % UID_SPAN in bases):
            continue
        try:
            groups = Path(f"/proc/{proc.pid}/cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        if not include_warm and (
            f"/{WARM_PREFIX}" in groups or any(c in groups for c in warm_container_ids())
        ):
            continue
        if cgroup_parent is not None and f"/{cgroup_parent}/" not in groups:
            continue
        found.append(proc)
    return found


def leftover_mounts(state_dir: Path, *, include_warm: bool = False) -> list[str]:
    """Mounts under the state dir but the daemon's own while it runs: the warm pool's (unless
    `include_warm`) and the tenants' download caches (mounted from first use to shutdown)."""
    with open("/proc/self/mountinfo") as fh:
        return [
            ln
            for ln in fh
            if f" {state_dir}/" in ln
            and (include_warm or f"runs/{WARM_PREFIX}" not in ln)
            and f" {state_dir}/caches/" not in ln
        ]


def leftover_cgroups(
    parent: str, *, include_warm: bool = False, include_fork_servers: bool = False
) -> list[Path]:
    """Run cgroups of a daemon (by its cgroup parent); its warm jails' only if
    `include_warm`, its fork servers' only if `include_fork_servers` (once per controller
    on cgroup v1)."""
    found: list[Path] = []
    for root in (Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").glob("*")):
        d = root / parent
        if d.is_dir():
            for p in d.iterdir():
                server = p.name.startswith(FORK_SERVER_PREFIX)
                warm = p.name.startswith(WARM_PREFIX) and not server
                if p.is_dir() and (include_fork_servers if server else include_warm or not warm):
                    found.append(p)
    return found


def warm_container_ids() -> list[str]:
    """Full ids of every sandboxd daemon's warm containers (idle or serving a run)."""
    if docker_problem():
        return []
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=sandboxd.run",
            "--format",
            "{{.ID}} {{.Labels}}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [ln.split()[0] for ln in out.splitlines() if f"sandboxd.run={WARM_PREFIX}" in ln]


def leftover_containers(state_dir: Path, *, include_warm: bool = False) -> list[str]:
    """Containers of this daemon that still exist (every run's must be removed), but its
    warm pool's unless `include_warm`."""
    if docker_problem():
        return []
    owner = f"sandboxd.owner={state_dir.resolve()}"
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={owner}", "--format", "{{.ID}} {{.Labels}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [
        line.split()[0]
        for line in out.splitlines()
        if include_warm or f"sandboxd.run={WARM_PREFIX}" not in line
    ]


def audit_trail(client: SyncClient, max_pages: int = 1000) -> list[AuditRecord]:
    """Every audit record the client may read, all pages (a shared daemon holds thousands)."""
    records: list[AuditRecord] = []
    after = 0
    for _ in range(max_pages):  # bounded
        page = client.audit(after=after, limit=1000)
        records += page.records
        if page.next_after is None:
            break
        after = page.next_after
    return records
