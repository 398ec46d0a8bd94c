"""Prepared environments kept as sandboxd snapshots, so that the next solve of the same
repository state starts from the environment a setup made instead of running the setup again.

Why a snapshot and not a cache of wheels: the expensive part of a setup is everything it does
(resolving, building, installing, generating files), and a fork of a snapshot copies nothing.

The key is a hash of what the environment depends on: the sandbox's Python (and the backend
it runs on), the package index its installs reach, the repository's name, the files a recipe
reads (`pyproject.toml`, `requirements*.txt`, `setup.py`/`setup.cfg`, `tox.ini`,
`noxfile.py`, `pytest.ini`, `.coder/setup.sh`, whichever of them decides the recipe), the
recipe's steps and coder's version. After a setup whose first test run collects, coder
snapshots the sandbox with the labels `coder.env` (the key) and `coder.repo`; a later solve
with the same key starts its sandbox from the newest such snapshot and runs no setup.

The snapshot's workspace holds the repository as it was uploaded then, besides what the setup
made (the venv in `.coder-venv`, generated files such as a setuptools-scm `_version.py`). The
list of paths coder uploaded is kept in the snapshot (`MANIFEST`); a fork removes the listed
files that the current tree no longer has, then the current tree is uploaded over the rest,
so a deleted file does not linger and a generated one stays. The sandbox, like every test run,
has the network off: only a setup's installs ever had an allowlist.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

from coder.errors import SandboxError
from coder.recipe import Step
from coder.repo import SETUP_SCRIPT
from coder.result import EnvState
from coder.sandbox import VENV, SandboxSession
from coder.trace import TraceWriter
from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.models import FileIn, Snapshot

LABEL_ENV = "coder.env"
LABEL_REPO = "coder.repo"
#: The paths coder uploaded before the snapshot, as JSON, in the snapshot's workspace.
MANIFEST = f"{VENV}/.coder-uploaded.json"
#: The paths of this upload, written for the one run that removes the stale ones.
CURRENT = f"{VENV}/.coder-current.json"
_READ_BY_RECIPES = {
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "tox.ini",
    "noxfile.py",
    "pytest.ini",
    SETUP_SCRIPT,
}
_REQUIREMENTS = re.compile(r"^(?:[\w.-]*requirements[\w.-]*\.txt|requirements/[\w.-]+\.txt)$")
#: Reads what the sandbox runs the tests with (nothing else of the host is in the key).
PYTHON_PROBE = "import sys; print(sys.version); print(sys.executable)"
#: In the fork: remove the files the snapshot's upload had and this one has not (and the
#: directories they leave empty). Without a manifest (it was removed by the repository's own
#: code), everything but the venv goes. Runs in the sandbox: its paths harm nothing else.
PRUNE_STALE = f"""
import json, os, shutil
new = set(json.load(open({CURRENT!r})))
os.remove({CURRENT!r})
try:
    old = json.load(open({MANIFEST!r}))
except (OSError, ValueError):
    old = None
if not isinstance(old, list):
    for name in os.listdir("."):
        if name != {VENV!r}:
            p = os.path.join(".", name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    raise SystemExit(0)
for path in old:
    if not isinstance(path, str) or path in new:
        continue
    try:
        os.remove(path)
    except OSError:
        continue
    parent = os.path.dirname(path)
    while parent:
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)
"""


def coder_version() -> str:
    try:
        return metadata.version("sandboxd")  # coder ships in the sandboxd distribution
    except metadata.PackageNotFoundError:
        return "unknown"


def read_by_recipe(files: dict[str, str]) -> dict[str, str]:
    """The repository's files that decide its recipe or its environment, by path."""
    return {p: t for p, t in files.items() if p in _READ_BY_RECIPES or _REQUIREMENTS.match(p)}


def env_key(
    python: str,
    repo: str,
    files: dict[str, str],
    steps: list[Step],
    sources: list[str] | None = None,
) -> str:
    """The key of the environment `steps` make for the repository `repo` whose text files are
    `files`, in a sandbox whose Python is `python`, installing from `sources` (the package
    indexes and egress rules its installs may reach: another index may give other packages)."""
    material = {
        "sources": sources or [],
        "python": python,
        "repo": repo,
        "files": sorted(read_by_recipe(files).items()),
        "steps": [[s.name, s.command, s.network] for s in steps],
        "coder": coder_version(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


async def sandbox_python(client: Client) -> str:
    """What the sandbox's Python is (version and path) and the backend it runs on; empty when
    the daemon does not say (then the key still holds everything else)."""
    try:
        info = await client.info()
        run = await client.run(language="bash", command=["python3", "-c", PYTHON_PROBE])
    except SandboxdError:
        return ""
    return f"{info.backend} {info.backend_version}\n{run.stdout.strip()}"


def repo_label(name: str) -> str:
    return name[:256]


def is_env(snapshot: Snapshot) -> bool:
    return LABEL_ENV in snapshot.labels


async def envs(client: Client) -> list[Snapshot]:
    """coder's snapshots on this daemon (those labelled `coder.env`), oldest first."""
    return [s for s in await client.list_snapshots() if is_env(s)]


async def find(client: Client, key: str, repo: str) -> Snapshot | None:
    """The newest snapshot of the environment `key` of `repo`, if the daemon keeps one."""
    found = [
        s
        for s in await envs(client)
        if s.labels.get(LABEL_ENV) == key and s.labels.get(LABEL_REPO) == repo_label(repo)
    ]
    return max(found, key=lambda s: s.created_at) if found else None


@dataclass
class EnvPlan:
    """The environment of one solve: its key, and the snapshot it starts from if any."""

    key: str
    repo: str
    snapshot: Snapshot | None = None
    #: Started from the snapshot: seconds the daemon took to fork it, and to the sandbox
    #: holding the current tree (fork, stale files removed, tree uploaded).
    fork_s: float | None = None
    ready_s: float | None = None

    def labels(self) -> dict[str, str]:
        return {LABEL_ENV: self.key, LABEL_REPO: repo_label(self.repo)}


def manifest(paths: list[str]) -> bytes:
    return json.dumps(sorted(paths)).encode()


async def plan(
    client: Client,
    repo: str,
    files: dict[str, str],
    steps: list[Step],
    sources: list[str],
    *,
    reuse: bool,
) -> EnvPlan:
    """The environment a solve needs, and (with `reuse`) the snapshot that holds it."""
    python = await sandbox_python(client)
    found = EnvPlan(env_key(python, repo, files, steps, sources), repo)
    if reuse:
        try:
            found.snapshot = await find(client, found.key, repo)
        except SandboxdError:
            found.snapshot = None  # a daemon without snapshots: prepare as without one
    return found


async def start_from(
    session: SandboxSession,
    env: EnvPlan,
    files: dict[str, bytes],
    executable: set[str],
    trace: TraceWriter,
    *,
    extra_disk_mib: int = 0,
) -> bool:
    """Start `session`'s sandbox from the environment's snapshot and bring its workspace to
    the current tree; False (nothing left behind) when the daemon refuses the fork, so the
    solve prepares the environment as without a snapshot."""
    if env.snapshot is None:
        return False
    started = time.monotonic()
    try:
        await session.create(files, extra_disk_mib=extra_disk_mib, from_snapshot=env.snapshot.id)
        if session.sandbox_id is None:
            return False
        env.fork_s = round(time.monotonic() - started, 4)
        current = FileIn(path=CURRENT, content=manifest(list(files)).decode())
        run = await session.client.run_in_sandbox(
            session.sandbox_id, command=["python3", "-c", PRUNE_STALE], files=[current]
        )
        if run.status != "ok" or run.exit_code != 0:
            raise SandboxError(f"clearing the snapshot's old files failed: {run.stderr[-300:]}")
    except (SandboxError, SandboxdError) as exc:
        reason = exc.message if isinstance(exc, SandboxdError) else str(exc)
        trace.event("env.fork_failed", key=env.key, snapshot_id=env.snapshot.id, reason=reason)
        await session.close()
        session.sandbox_id = None
        return False
    await session.upload(files, executable)
    env.ready_s = round(time.monotonic() - started, 4)
    return True


async def keep(
    session: SandboxSession,
    env: EnvPlan,
    paths: list[str],
    trace: TraceWriter,
    *,
    ttl_s: int | None = None,
) -> Snapshot | None:
    """Snapshot the prepared sandbox as the environment `env`, with the list of the files
    coder uploaded, as a cache the daemon drops after `ttl_s` unused (or evicts, least
    recently used first, for a newer one); None (traced, the solve goes on) when the daemon
    refuses, e.g. over its snapshot-disk quota with nothing left to evict."""
    if session.sandbox_id is None:
        return None
    try:
        listed = FileIn(path=MANIFEST, content=manifest(paths).decode())
        run = await session.client.run_in_sandbox(
            session.sandbox_id, command=["true"], files=[listed]
        )  # a run's files make their directories (a setup may have made no `.coder-venv`)
        if run.status != "ok":
            trace.event("env.snapshot_failed", key=env.key, reason=f"manifest: {run.status}")
            return None
        snap = await session.client.create_snapshot(session.sandbox_id, env.labels(), ttl_s=ttl_s)
    except SandboxdError as exc:
        trace.event("env.snapshot_failed", key=env.key, reason=exc.message)
        return None
    trace.event("env.kept", key=env.key, snapshot_id=snap.id, size_bytes=snap.size_bytes)
    return snap


def state(env: EnvPlan, reused: bool, snapshot: Snapshot | None) -> EnvState:
    return EnvState(
        key=env.key,
        reused=reused,
        snapshot_id=snapshot.id if snapshot else None,
        fork_s=env.fork_s if reused else None,
        ready_s=env.ready_s if reused else None,
    )


def age_s(snapshot: Snapshot, now: datetime | None = None) -> float:
    created = snapshot.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - created).total_seconds()


def size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
