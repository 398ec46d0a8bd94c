"""Running a repository's setup recipe (coder.recipe) in its sandbox, and the package index the
installs may reach.

Why here and not in the loop: a setup is an environment's business, and its failure is no bug
for the writer. Each step runs with a timeout (`setup_timeout_s`, and pip's own `--timeout`
and `--retries`); the first that fails stops the solve with `setup_failed`, naming the step,
its exit status and the tail of its output, so a half-prepared environment is never handed to
the writer (which would then "fix" the tests by shimming what is missing).

Network: the sandbox and every test run keep the network off. Only a step that installs runs
with an egress allowlist, naming the package index this host's pip is configured for (`pip
config list`, which includes `PIP_INDEX_URL` and friends) or the `index_url` setting, plus the
`setup_allow` rules (a mirror's address, the host an index serves its files from). Never open
network; an index given as a file path cannot be reached from a sandbox and is left out, and
credentials in an index URL stay on this host (the build of the repository runs its own code).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from coder.errors import SetupFailed
from coder.preflight import tail
from coder.recipe import Step
from coder.result import SetupFailure, SetupStep
from coder.sandbox import SandboxSession
from coder.trace import TraceWriter
from sandboxd.models import Limits, NetworkPolicy

PIP_RETRIES = 2
PIP_TIMEOUT_S = 30


@dataclass
class Index:
    """The package indexes a setup may install from: URLs first the main one, trusted hosts."""

    urls: list[str] = field(default_factory=list)
    trusted: list[str] = field(default_factory=list)

    def rules(self) -> list[str]:
        """Egress rules naming each index's host and port."""
        out = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.hostname:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                out.append(f"{parts.hostname}:{port}")
        return list(dict.fromkeys(out))

    def env(self, *, cached: bool = False) -> dict[str, str]:
        """pip's settings for an install; `cached`: the daemon's download cache is mounted
        (and names itself in PIP_CACHE_DIR), else pip keeps no cache in the workspace."""
        env = {"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        if not cached:
            env["PIP_NO_CACHE_DIR"] = "1"
        if self.urls:
            env["PIP_INDEX_URL"] = self.urls[0]
        if self.urls[1:]:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(self.urls[1:])
        hosts = self.trusted + [
            urlsplit(u).hostname or "" for u in self.urls if u.startswith("http:")
        ]
        if any(hosts):
            env["PIP_TRUSTED_HOST"] = " ".join(dict.fromkeys(h for h in hosts if h))
        return env


def _pip_config() -> dict[str, str]:
    """This host's pip configuration, as `pip config list` prints it (environment first)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    values: dict[str, str] = {}
    rank = {":env:": 0, "install": 1, "global": 2}
    ranked: dict[str, int] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        r = rank.get(section, 3)
        if name and r < ranked.get(name, 9):
            values[name], ranked[name] = value.strip().strip("'\""), r
    return values


def _pip_default() -> list[str]:
    """pip's own default index and the host it serves files from, when pip says."""
    try:
        from pip._internal.models.index import PyPI  # pip's default: no name written here
    except ImportError:
        return []
    return [PyPI.simple_url, f"https://{PyPI.file_storage_domain}/"]


def resolve_index(index_url: str | None) -> Index:
    """The index a setup installs from: `index_url`, else pip's configuration, else pip's
    default. Only http(s) URLs: a sandbox cannot read this host's files."""
    config = _pip_config()
    main = index_url or config.get("index-url")
    extra = [] if index_url else config.get("extra-index-url", "").split()
    urls = ([main] if main else _pip_default()[:1]) + extra
    if not main:
        urls += _pip_default()[1:]
    urls = [_public(u) for u in urls if urlsplit(u).scheme in ("http", "https")]
    return Index(urls, config.get("trusted-host", "").split() if not index_url else [])


def _public(url: str) -> str:
    """`url` without credentials: the setup runs the repository's own code (its build), which
    must not be handed this host's index token."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=netloc).geturl()


def pip_options() -> list[str]:
    return ["--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES)]


@dataclass
class Setup:
    """The recipe's steps, run in order in one sandbox, each bounded in time."""

    steps: list[Step]
    index: Index
    limits: Limits
    timeout_s: float
    allow: list[str] = field(default_factory=list)
    #: Installs use the tenant's download cache on the daemon (when it gives the tenant one).
    download_cache: bool = True

    def network(self) -> NetworkPolicy | None:
        rules = self.index.rules() + self.allow
        return NetworkPolicy(mode="allowlist", allow=rules) if rules else None

    async def run(self, session: SandboxSession, trace: TraceWriter, done: list[SetupStep]) -> None:
        """Run every step, recording each in `done`; raise SetupFailed at the first failure."""
        limits = self.limits.model_copy(
            update={
                "wall_time_s": self.timeout_s,
                "cpu_time_s": self.timeout_s,
                "file_size_mib": max(self.limits.file_size_mib, 256),
            }
        )
        for step in self.steps:
            network = self.network() if step.network else None
            cached = self.download_cache and network is not None
            trace.event("setup.step", step=step.name, command=step.command)
            started = time.monotonic()
            run = await session.run_step(
                step.command,
                limits=limits,
                env=self.index.env(cached=cached),
                network=network,
                download_cache=cached,
            )
            record = SetupStep(
                step=step.name,
                command=step.command,
                exit_code=run.exit_code,
                status=run.status,
                seconds=round(time.monotonic() - started, 4),
            )
            done.append(record)
            trace.event("setup.done", **record.model_dump())
            if run.status == "ok" and run.exit_code == 0:
                continue
            if run.status in ("ok", "failed"):
                reason = f"it exited with status {run.exit_code}"
            elif run.status == "timeout":
                reason = f"it did not finish within {limits.wall_time_s:g}s"
            else:
                reason = f"it stopped: {run.status}" + (f" ({run.message})" if run.message else "")
            raise SetupFailed(
                SetupFailure(**record.model_dump(), reason=reason, output_tail=tail(run.output))
            )
