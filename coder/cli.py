"""`coder solve` a repository's failing tests; `coder replay` / `coder resume` a trace.

`coder envs list` / `coder envs prune` the prepared environments sandboxd keeps for coder.

Exit codes: 0 fixed or already passing, 1 not fixed, 2 usage error, 3 infrastructure error
(model or sandbox) or setup_failed (the environment could not be prepared, or the tests do not
even collect: the step, its exit status and the end of its output are printed). `envs prune`:
1 when an environment is in use (a sandbox started from it), and was left.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from coder import envs
from coder import repo as repo_files
from coder.app import Outcome, check_repo, replay_models, solve
from coder.config import CoderConfig, load_config
from coder.errors import CoderError, SandboxError, UsageError
from coder.progress import Progress, plural
from coder.trace import TraceWriter, read_events
from sandboxd.client import (
    DEFAULT_URL,
    Client,
    OneLineArgumentParser,
    default_token,
    quiet_broken_pipe,
)
from sandboxd.errors import Conflict, SandboxdError
from sandboxd.models import Snapshot, SnapshotList


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
        "include_ignored",
        "setup",
        "setup_timeout_s",
        "index_url",
    )
    flags = {n: getattr(args, n, None) for n in names}
    flags["repo"] = Path(args.path) if getattr(args, "path", None) else None
    if getattr(args, "allow_test_edits", False):
        flags["allow_test_edits"] = True
    if getattr(args, "ci", False):
        flags["mode"] = "ci"
    if getattr(args, "fresh_env", False):
        flags["reuse_env"] = False
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
        if result.setup is not None and result.setup.output_tail:
            print(f"coder: the end of {result.setup.step}'s output:", file=sys.stderr)
            for line in result.setup.output_tail.splitlines()[-20:]:
                print(f"  | {line}", file=sys.stderr)
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
    models = replay_models(cfg, events, trace, resume=resume)
    print(f"coder: {'resuming' if resume else 'replaying'} trace {old_id}", file=sys.stderr)
    outcome = await solve(cfg, models=models, trace=trace, progress=_progress(args))
    return _finish(args, cfg, outcome)


async def _envs_client(args: argparse.Namespace) -> Client:
    """The sandboxd that keeps the environments; it must answer (one coder starts for a solve
    keeps none)."""
    cfg = load_config(Path(args.config) if args.config else None, _flags(args))
    url = cfg.sandboxd_url or os.environ.get("SANDBOXD_URL") or DEFAULT_URL
    client = Client(url, token=cfg.sandboxd_token or default_token())
    try:
        await client.health()
    except SandboxdError as exc:
        await client.close()
        raise SandboxError(
            f"{exc.message}; the prepared environments are kept by a running sandboxd "
            "(--sandboxd-url, SANDBOXD_URL): start it"
        ) from None
    return client


def _env_line(s: Snapshot) -> str:
    created = s.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    expires = s.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if s.expires_at else "never"
    repo = s.labels.get(envs.LABEL_REPO, "?")
    size = envs.size_text(s.size_bytes)
    return (
        f"{s.labels[envs.LABEL_ENV]:<32}  {repo:<20}  {size:>10}  {created}  {expires:<20}  {s.id}"
    )


async def _run_envs(args: argparse.Namespace) -> int:
    if args.envs_command == "prune" and not args.all and args.older_than_s is None:
        raise UsageError("say which to prune: --older-than-s N, or --all")
    if args.envs_command == "prune" and (args.older_than_s or 0) < 0:
        raise UsageError("--older-than-s must be 0 or more (seconds)")
    client = await _envs_client(args)
    try:
        kept = await envs.envs(client)
        if args.envs_command == "list":
            if args.json:
                print(SnapshotList(snapshots=kept).model_dump_json(indent=2))
            elif not kept:
                print(f"coder: sandboxd at {client.url} keeps no environments", file=sys.stderr)
            else:
                print(
                    f"{'KEY':<32}  {'REPO':<20}  {'SIZE':>10}  {'CREATED':<20}  "
                    f"{'EXPIRES':<20}  SNAPSHOT"
                )
                for s in kept:
                    print(_env_line(s))
            return 0
        busy = 0
        for s in kept:
            if not args.all and envs.age_s(s) <= args.older_than_s:
                continue
            try:
                await client.delete_snapshot(s.id)
            except Conflict as exc:
                busy += 1
                print(f"coder: {s.id} is in use, left: {exc.message}", file=sys.stderr)
                continue
            print(f"deleted {_env_line(s)}")
        return 1 if busy else 0
    except SandboxdError as exc:
        raise SandboxError(f"sandboxd: {exc.message}") from exc
    finally:
        await client.close()


def _envs_parser(sub: Any) -> None:
    e = sub.add_parser("envs", help="the prepared environments sandboxd keeps for coder")
    actions = e.add_subparsers(dest="envs_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="key, repository, size, created, expires (unless used), snapshot id"
    )
    listing.add_argument("--json", action="store_true", help="print the snapshots as JSON")
    prune = actions.add_parser("prune", help="delete coder's snapshots (one line per deleted)")
    prune.add_argument(
        "--older-than-s", type=float, metavar="N", help="those created over N seconds ago"
    )
    prune.add_argument("--all", action="store_true", help="every one")
    for p in (listing, prune):
        p.add_argument("--sandboxd-url", help="the sandboxd (default $SANDBOXD_URL, else local)")
        p.add_argument("--config", help="TOML config (for sandboxd_url, sandboxd_token)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
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
        "--include-ignored",
        action="append",
        metavar="GLOB",
        help="upload the gitignored files this glob names too, e.g. generated "
        "'src/*/_version.py' (repeatable)",
    )
    s.add_argument(
        "--setup",
        help="command run in the sandbox before the tests (default: .coder/setup.sh, else "
        "a recipe derived from the repository's declarations)",
    )
    s.add_argument(
        "--setup-timeout-s", type=float, help="seconds for each setup step (default 300)"
    )
    s.add_argument(
        "--index-url", help="package index for the setup's installs (default: pip's config)"
    )
    s.add_argument(
        "--fresh-env",
        action="store_true",
        help="run the setup even when sandboxd keeps the prepared environment (and keep the "
        "new one)",
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
    _envs_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "solve":
            code = asyncio.run(_run_solve(args))
        elif args.command == "envs":
            code = asyncio.run(_run_envs(args))
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
