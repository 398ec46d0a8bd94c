"""`coder solve` a repository's failing tests; `coder replay` / `coder resume` a trace.

Exit codes: 0 fixed or already passing, 1 not fixed, 2 usage error, 3 infrastructure error
(model or sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from coder import repo as repo_files
from coder.budget import Budget
from coder.config import CoderConfig, load_config
from coder.errors import CoderError, SandboxError, UsageError
from coder.model import Model, OpenAIModel, ReplayModel, ResponseCache
from coder.progress import Progress, plural
from coder.result import SolveResult
from coder.sandbox import LocalDaemon, SandboxSession
from coder.solve import Solver
from coder.trace import TraceWriter, read_events, replies
from sandboxd.cli_admin import quiet_broken_pipe
from sandboxd.client import DEFAULT_URL, Client, default_token
from sandboxd.errors import SandboxdError


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


async def _sandboxd(
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


async def solve(
    cfg: CoderConfig,
    *,
    writer: Model | None = None,
    reviewer: Model | None = None,
    trace: TraceWriter | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run one solve: its result, the unified diff (possibly partial) and the changed files.
    `progress`, when given, is told of every event as it happens."""
    root = cfg.repo.resolve()
    check_repo(root)
    trace_id = trace.trace_id if trace else secrets.token_hex(16)
    trace = trace or TraceWriter(root / cfg.trace_dir / f"{trace_id}.jsonl", trace_id)
    if progress is not None:
        trace.listeners.append(progress)
    trace.event("solve.start", config=json.loads(cfg.model_dump_json()))
    writer = writer or live_model(cfg, cfg.model, trace, "writer")
    reviewer = reviewer or live_model(cfg, cfg.reviewer, trace, "reviewer")
    budget = Budget(cfg.max_iterations, cfg.max_tokens, cfg.max_cost_usd, cfg.max_wall_s)
    files = await repo_files.load(root)
    local: LocalDaemon | None = None
    client: Client | None = None
    session: SandboxSession | None = None
    outcome = Outcome(SolveResult(status="sandbox_error", trace_id=trace_id))
    try:
        try:
            client, local = await _sandboxd(cfg, trace_id, progress)
            session = SandboxSession(client, cfg.test, cfg.test_limits)
            await session.start(files.all_bytes(), files.executable)
        except SandboxError as exc:
            outcome.result.reason = str(exc)
        else:
            trace.event("sandbox.ready", sandbox_id=session.sandbox_id, url=client.url)
            solver = Solver(
                cfg.task,
                files,
                session,
                writer,
                reviewer,
                budget,
                trace,
                allow_test_edits=cfg.allow_test_edits,
            )
            outcome.result = await solver.run()
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
    return outcome


def check_repo(root: Path) -> None:
    """Refuse a path that is not a directory before anything is written under it (the trace)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise UsageError(f"{root} {what}: give the path of a repository (default: .)")


def _check_apply(args: argparse.Namespace, cfg: CoderConfig) -> None:
    """--apply asks before writing; without a terminal it could only ever say no."""
    asks = getattr(args, "apply", False) and not args.yes and cfg.mode != "ci"
    if asks and not sys.stdin.isatty():
        raise UsageError(
            "--apply asks for confirmation on a terminal and stdin is not one: "
            "add --yes to apply without asking (or --ci)"
        )


def _progress(args: argparse.Namespace) -> Progress | None:
    return None if args.quiet else Progress()


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "test",
        "task",
        "model",
        "reviewer_model",
        "base_url",
        "api_key_env",
        "max_iterations",
        "max_cost_usd",
        "max_tokens",
        "max_wall_s",
        "sandboxd_url",
    )
    flags = {n: getattr(args, n, None) for n in names}
    flags["repo"] = Path(args.path) if getattr(args, "path", None) else None
    if getattr(args, "allow_test_edits", False):
        flags["allow_test_edits"] = True
    if getattr(args, "ci", False):
        flags["mode"] = "ci"
    return flags


def _finish(args: argparse.Namespace, cfg: CoderConfig, outcome: Outcome) -> int:
    result, diff = outcome.result, outcome.diff
    out_dir: Path | None = Path(args.out_dir) if getattr(args, "out_dir", None) else None
    patch_out = Path(args.patch_out) if getattr(args, "patch_out", None) else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        patch_out = patch_out or out_dir / "patch.diff"
    if diff and patch_out:
        patch_out.write_text(diff)
        result.patch_path = str(patch_out)
    applied = False
    wants_apply = diff and getattr(args, "apply", False) and result.status == "fixed"
    if wants_apply and (cfg.mode == "ci" or args.yes or _confirm(diff)):
        repo_files.write_back(cfg.repo.resolve(), outcome.changed)
        applied = True
    if out_dir:
        (out_dir / "result.json").write_text(result.model_dump_json(indent=2))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        if diff and not patch_out:
            sys.stdout.write(diff)
        print(
            f"coder: {result.status}"
            + (f" ({result.reason})" if result.reason else "")
            + f"; {plural(result.iterations, 'iteration')}; trace {result.trace_path}"
            + ("; applied" if applied else ""),
            file=sys.stderr,
        )
    return result.exit_code


def _confirm(diff: str) -> bool:
    if not sys.stdin.isatty():
        return False
    sys.stdout.write(diff)
    return input("Apply this patch? [y/N] ").strip().lower() in ("y", "yes")


async def _run_solve(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config) if args.config else None, _flags(args))
    cfg.check_prices()
    _check_apply(args, cfg)
    check_repo(cfg.repo.resolve())
    return _finish(args, cfg, await solve(cfg, progress=_progress(args)))


async def _run_trace(args: argparse.Namespace, resume: bool) -> int:
    events = read_events(Path(args.trace))
    cfg = CoderConfig.model_validate(events[0]["config"])
    if args.base_url:  # the model endpoint may have moved since the trace was written
        cfg = cfg.model_copy(update={"base_url": args.base_url})
    _check_apply(args, cfg)
    old_id = events[0]["trace_id"]
    new_id = secrets.token_hex(16)
    path = Path(args.trace).with_name(f"{new_id}.jsonl")
    trace = TraceWriter(path, new_id)
    writers = ReplayModel(
        cfg.model,
        replies(events, "writer"),
        live_model(cfg, cfg.model, trace, "writer") if resume else None,
    )
    reviewers = ReplayModel(
        cfg.reviewer,
        replies(events, "reviewer"),
        live_model(cfg, cfg.reviewer, trace, "reviewer") if resume else None,
    )
    print(f"coder: {'resuming' if resume else 'replaying'} trace {old_id}", file=sys.stderr)
    outcome = await solve(
        cfg, writer=writers, reviewer=reviewers, trace=trace, progress=_progress(args)
    )
    return _finish(args, cfg, outcome)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("solve", help="fix a repository's failing tests")
    s.add_argument("path", nargs="?", default=".", help="the repository (default: .)")
    s.add_argument("--test", help='test command, run in the sandbox (default "pytest -q")')
    s.add_argument("--task", help="what to achieve, in words (default: make the tests pass)")
    s.add_argument("--model", help="the writer's model (default gpt-4o-mini)")
    s.add_argument("--reviewer-model", help="the reviewer's model (default: the writer's)")
    s.add_argument("--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    s.add_argument("--api-key-env", help="variable holding the API key (OPENAI_API_KEY)")
    s.add_argument("--max-iterations", type=int, help="writer turns at most (default 8)")
    s.add_argument("--max-cost-usd", type=float, help="spend at most this, in USD (default 2)")
    s.add_argument("--max-tokens", type=int, help="model tokens at most (default 400000)")
    s.add_argument("--max-wall-s", type=float, help="seconds at most (default 900)")
    s.add_argument(
        "--allow-test-edits", action="store_true", help="let the writer edit the tests too"
    )
    s.add_argument(
        "--sandboxd-url",
        help="sandboxd to run the tests in; it must answer (default $SANDBOXD_URL, else "
        "http://127.0.0.1:8765, else a sandboxd coder starts for the solve)",
    )
    s.add_argument(
        "--config", help="TOML config (default .coder.toml, ~/.config/coder/config.toml)"
    )
    for p in (
        s,
        *(
            sub.add_parser(n, help=h)
            for n, h in (
                ("replay", "re-run a solve from its recorded model replies"),
                ("resume", "continue an interrupted solve from its trace"),
            )
        ),
    ):
        if p is not s:
            p.add_argument("trace", help="trace file (JSONL)")
            p.add_argument("--base-url", help="model endpoint, if not the trace's")
        p.add_argument("--patch-out", help="write the unified diff here")
        p.add_argument(
            "--apply", action="store_true", help="apply the patch when fixed (asks on a terminal)"
        )
        p.add_argument("--yes", action="store_true", help="with --apply: apply without asking")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--ci", action="store_true", help="never prompt; see --out-dir")
        p.add_argument("--out-dir", help="write patch.diff and result.json here")
        p.add_argument(
            "--quiet", action="store_true", help="no progress lines on stderr while working"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "solve":
            code = asyncio.run(_run_solve(args))
        else:
            code = asyncio.run(_run_trace(args, resume=args.command == "resume"))
        sys.stdout.flush()  # here, where a reader that has gone is caught, not at exit
        return code
    except CoderError as exc:
        print(f"coder: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `coder replay --json | head`: the reader has gone
        return quiet_broken_pipe()
