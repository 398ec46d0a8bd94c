"""The wiring of a solve: config → model clients (one per role) → sandboxd and its sandbox →
the loop → the result and the trace. `coder.cli` parses arguments and prints; this module is
what a solve is, for the CLI and for any other front end.

Which roles there are is `coder.agents.ROLES`: a model is built (or read back from a trace)
for each, by the role's name, so a new role needs nothing here."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from coder import envs
from coder import repo as repo_files
from coder.agents import ROLES
from coder.budget import Budget
from coder.config import CoderConfig
from coder.errors import SandboxError, UsageError
from coder.loop import Solver
from coder.model import Model, OpenAIModel, ReplayModel, ResponseCache
from coder.progress import Progress
from coder.recipe import recipe
from coder.report import SolveReporter
from coder.result import SolveResult
from coder.sandbox import LocalDaemon, SandboxSession
from coder.setup import Setup, pip_options, resolve_index
from coder.trace import TraceWriter, replies
from sandboxd.client import DEFAULT_URL, Client, default_token
from sandboxd.errors import SandboxdError
from sandboxd.models import Snapshot


def live_model(cfg: CoderConfig, name: str, trace: TraceWriter, agent: str) -> Model:
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UsageError(f"no API key: set {cfg.api_key_env} (any value for local endpoints)")
    client = AsyncOpenAI(api_key=key, base_url=cfg.base_url, max_retries=0, timeout=120.0)
    cache = ResponseCache(cfg.cache_dir) if cfg.cache_dir else None
    return OpenAIModel(
        client,
        name,
        prices=cfg.prices,
        cache=cache,
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        on_retry=lambda why, delay: trace.event(
            "model.retry", agent=agent, error=why, delay_s=round(delay, 3)
        ),
    )


def live_models(cfg: CoderConfig, trace: TraceWriter) -> dict[str, Model]:
    """The configured model of every role, by role name."""
    return {r.name: live_model(cfg, r.model_name(cfg), trace, r.name) for r in ROLES}


def replay_models(
    cfg: CoderConfig, events: list[dict[str, Any]], trace: TraceWriter, *, resume: bool
) -> dict[str, Model]:
    """Every role's recorded replies in order; then, to resume, its live model."""
    return {
        r.name: ReplayModel(
            r.model_name(cfg),
            replies(events, r.name),
            live_model(cfg, r.model_name(cfg), trace, r.name) if resume else None,
        )
        for r in ROLES
    }


async def connect(
    cfg: CoderConfig, trace_id: str, progress: Progress | None = None
) -> tuple[Client, LocalDaemon | None]:
    """The configured sandboxd, which must answer; with none configured, the default one, and
    when that does not answer either, one started for this solve (and said so)."""
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    url = cfg.sandboxd_url or os.environ.get("SANDBOXD_URL") or None
    token = cfg.sandboxd_token or default_token()
    client = Client(url or DEFAULT_URL, token=token, traceparent=parent)
    try:
        await client.health()
        return client, None
    except SandboxdError as exc:
        await client.close()
        if url is not None:
            raise SandboxError(
                f"{exc.message}; start sandboxd there, or give no --sandboxd-url (nor "
                "SANDBOXD_URL, nor sandboxd_url in the config) to let coder start one"
            ) from exc
    local = LocalDaemon()
    say = None
    if progress is not None:
        say = lambda text: progress.say("setup", f"none answers at {DEFAULT_URL}; {text}")  # noqa: E731
    try:
        await local.start(say=say)
    except BaseException:
        await local.stop()
        raise
    return Client(local.url, token=local.token, traceparent=parent), local


@dataclass
class Outcome:
    result: SolveResult
    diff: str = ""
    changed: dict[str, str] = field(default_factory=dict)


def check_repo(root: Path) -> None:
    """Refuse a path that is not a directory before anything is written under it (the trace)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise UsageError(f"{root} {what}: give the path of a repository (default: .)")


async def prepared(cfg: CoderConfig, files: repo_files.RepoFiles) -> Setup | None:
    """The setup recipe of the repository (coder.recipe), with the index its installs may
    reach (coder.setup); None when there is nothing to prepare."""
    steps = recipe(files.text, cfg.setup, pip_options())
    if not steps:
        return None
    index = await asyncio.to_thread(resolve_index, cfg.index_url)
    return Setup(
        steps,
        index,
        cfg.test_limits,
        cfg.setup_timeout_s,
        list(cfg.setup_allow),
        cfg.download_cache,
    )


async def start(
    cfg: CoderConfig,
    repo: str,
    files: repo_files.RepoFiles,
    setup: Setup | None,
    session: SandboxSession,
    trace: TraceWriter,
    local: LocalDaemon | None,
) -> tuple[envs.EnvPlan | None, bool]:
    """Start the solve's sandbox: from the kept snapshot of its environment when there is one
    (coder.envs), else fresh. The environment (None: nothing to prepare, or a sandboxd that
    coder started for this solve, which keeps nothing), and whether it was reused."""
    env: envs.EnvPlan | None = None
    room = cfg.setup_disk_mib if setup is not None else 0
    if setup is not None and local is None:
        sources = setup.index.urls + setup.allow
        env = await envs.plan(
            session.client, repo, files.text, setup.steps, sources, reuse=cfg.reuse_env
        )
        trace.event("env.plan", key=env.key, snapshot_id=env.snapshot.id if env.snapshot else None)
        if env.snapshot is not None and await envs.start_from(
            session, env, files.all_bytes(), files.executable, trace, extra_disk_mib=room
        ):
            return env, True
    await session.start(files.all_bytes(), files.executable, extra_disk_mib=room)
    return env, False


async def keep(
    session: SandboxSession,
    env: envs.EnvPlan,
    files: repo_files.RepoFiles,
    trace: TraceWriter,
    kept: list[Snapshot],
    ttl_s: int,
) -> None:
    snap = await envs.keep(session, env, sorted(files.all_bytes()), trace, ttl_s=ttl_s)
    if snap is not None:
        kept.append(snap)


async def solve(
    cfg: CoderConfig,
    *,
    models: dict[str, Model] | None = None,
    trace: TraceWriter | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run one solve: its result, the unified diff (possibly partial) and the changed files.
    `models` (by role name) default to the configured live ones; `progress`, when given, is
    told of every event as it happens."""
    root = cfg.repo.resolve()
    check_repo(root)
    trace_id = trace.trace_id if trace else secrets.token_hex(16)
    trace = trace or TraceWriter(root / cfg.trace_dir / f"{trace_id}.jsonl", trace_id)
    if progress is not None:
        trace.listeners.append(progress)
    reporter = SolveReporter(cfg, trace_id)  # to the daemon's Studio, best-effort
    trace.listeners.append(reporter)
    trace.event("solve.start", config=json.loads(cfg.model_dump_json()))
    models = models or live_models(cfg, trace)
    budget = Budget(
        cfg.max_iterations, cfg.max_tokens, cfg.max_cost_usd, cfg.max_wall_s, cfg.max_requests
    )
    files = await repo_files.load(root, cfg.include_ignored)
    setup = await prepared(cfg, files)
    local: LocalDaemon | None = None
    client: Client | None = None
    session: SandboxSession | None = None
    outcome = Outcome(SolveResult(status="sandbox_error", trace_id=trace_id))
    try:
        try:
            client, local = await connect(cfg, trace_id, progress)
            if local is None:  # a daemon started for this solve ends with it: nobody to show
                reporter.attach(client)
            session = SandboxSession(client, cfg.test, cfg.test_limits)
            env, reused = await start(cfg, root.name, files, setup, session, trace, local)
        except SandboxError as exc:
            outcome.result.reason = str(exc)
        else:
            trace.event("sandbox.ready", sandbox_id=session.sandbox_id, url=client.url)
            solver = Solver(
                cfg.task,
                files,
                session,
                models,
                budget,
                trace,
                allow_test_edits=cfg.allow_test_edits,
                setup=None if reused else setup,
            )
            reporter.patch = lambda: solver.diff
            kept: list[Snapshot] = []
            if env is not None and not reused:
                solver.on_prepared = lambda: keep(session, env, files, trace, kept, cfg.env_ttl_s)
            outcome.result = await solver.run()
            if env is not None:
                outcome.result.env = envs.state(env, reused, env.snapshot if reused else None)
                if kept:
                    outcome.result.env.snapshot_id = kept[0].id
            outcome.diff = solver.diff
            outcome.changed = {p: solver.current[p] for p in outcome.result.files_changed}
    finally:
        if session is not None:
            await session.close()
        if client is not None:
            await client.close()
        if local is not None:
            await local.stop()
    outcome.result.trace_path = str(trace.path)
    trace.event("solve.end", result=json.loads(outcome.result.model_dump_json()))
    trace.close()
    await reporter.close()
    return outcome
