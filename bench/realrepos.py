"""coder on real PyPI projects (issue 16's "Done when"): pinned sdists with their own tests, one
injected bug per task, `coder solve` against a real sandboxd with a scripted model that gives
the right edit once it has been shown the buggy lines.

Why this model: it measures coder, not a model. It fixes the bug exactly when the buggy lines
are in its prompt (the inverse edit block); otherwise it asks for the definition of the named
function, then for the file, when their names are in its prompt, and gives up after that. A
task whose suite does not pass in a plain venv on the host before the injection, or does not
fail after it, is dropped (and listed), so every task left must end `fixed` or, when coder
cannot prepare its environment, `setup_failed`: a `gave_up` is a coder failure.

coder prepares each environment itself (its recipe, the host's pip index through the daemon's
egress allowlist). Opt-in from `bench/run.py` with `--realrepos`, as it downloads sdists once
(cached under /var/tmp/coder-realrepos) and its setups install from the index.

    python -m bench.realrepos [--project NAME] [--task NAME]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.machine import describe
from bench.realrepos_tasks import (
    PROJECTS,
    Injected,
    Project,
    Task,
    fetch,
    host_suite,
    host_venv,
    inject,
    unpack,
)
from coder.setup import resolve_index
from coder.testing.harness import LoopbackServer, coder_env, run_coder, write_config
from sandboxd.testing import Daemon

SOLVE_TIMEOUT_S = 900


class ShownModel:
    """The scripted model, on loopback in a thread: the inverse edit once the buggy lines are
    in the prompt, else a request for what it can name, else GIVE UP. Reviewer: APPROVE."""

    def __init__(self, task: Task, bug: Injected) -> None:
        self.task, self.bug = task, bug
        self.prompts: list[str] = []
        self.asks = 0
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        self.server = LoopbackServer(app)
        self.url = self.server.url

    def shown(self, text: str) -> bool:
        lines = [ln.strip() for ln in self.bug.buggy_lines.split("\n") if ln.strip()]
        return self.task.path in text and all(ln in text for ln in lines)

    def writer_reply(self, text: str) -> str:
        if self.shown(text):
            return (
                f"{self.task.path}\n<<<<<<< SEARCH\n{self.bug.buggy_lines}\n=======\n"
                f"{self.bug.fixed_lines}\n>>>>>>> REPLACE\n"
            )
        name = self.task.qualname
        if f"## DEFINITION {name}" not in text and name.split(".")[-1] in text:
            return f"```requests\nDEFINITION {name}\n```\n"
        if f"## READ {self.task.path}" not in text and self.task.path in text:
            return f"```requests\nREAD {self.task.path}\n```\n"
        return "GIVE UP: I was not shown the code that fails."

    async def completions(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        if body.get("model") == "reviewer":
            reply = "APPROVE"
        else:
            self.prompts.append(text)
            reply = self.writer_reply(text)
            self.asks += reply.startswith("```requests")
        usage = {"prompt_tokens": len(text) // 4 + 1, "completion_tokens": len(reply) // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        message = {"role": "assistant", "content": reply}
        return web.json_response(
            {
                "id": f"chatcmpl-shown-{len(self.prompts)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": usage,
            }
        )

    def __enter__(self) -> ShownModel:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


@dataclass
class Outcome:
    project: str
    task: str
    status: str  # fixed | gave_up | setup_failed | ... | dropped
    reason: str = ""
    iterations: int = 0
    setup_s: float = 0.0
    wall_s: float = 0.0
    per_iteration_s: float = 0.0
    test_s: float = 0.0  # all test runs of the solve, the first (before any edit) included
    first_prompt_shows_bug: bool = False
    asks: int = 0
    detail: str = ""  # the failed setup step's output tail, for the log


def solve_task(daemon: Daemon, project: Project, task: Task, sdist: Path, work: Path) -> Outcome:
    """One task: unpack, inject, `coder solve --json` with the scripted model."""
    tree = unpack(sdist, work / task.name)
    bug = inject(tree, task)
    for path in project.generated:
        (tree / path).unlink()
    cfg = write_config(
        work / f"{task.name}.toml",
        test=project.test,
        max_iterations=4,
        max_wall_s=SOLVE_TIMEOUT_S - 60,
        trace_dir=str(work / "traces"),
    )
    with ShownModel(task, bug) as model:
        args = ["solve", str(tree), "--config", str(cfg), "--base-url", model.url, "--json"]
        proc = run_coder(*args, env=coder_env(daemon), timeout_s=SOLVE_TIMEOUT_S)
        prompts = list(model.prompts)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return Outcome(project.key, task.name, "no_json", " | ".join(tail))
    reason, detail = result.get("reason", ""), ""
    if result.get("setup"):
        s = result["setup"]
        reason, detail = f"{s['step']}: {s['reason']}", s.get("output_tail", "")
    iterations = int(result.get("iterations", 0))
    setup_s = float(result.get("setup_time_s", 0.0))
    wall = float(result.get("wall_time_s", 0.0))
    return Outcome(
        project.key,
        task.name,
        str(result.get("status")),
        reason.replace("\n", " ")[:400],
        iterations,
        round(setup_s, 2),
        round(wall, 2),
        round((wall - setup_s) / iterations, 2) if iterations else 0.0,
        round(float(result.get("test_time_s", 0.0)), 2),
        bool(prompts) and model.shown(prompts[0]),
        model.asks,
        detail,
    )


def check(project: Project, task: Task, sdist: Path, work: Path, python: Path) -> str | None:
    """Why `task` is dropped (suite does not pass clean / does not fail buggy), or None."""
    tree = unpack(sdist, work / f"check-{task.name}")
    try:
        inject(tree, task)
    except ValueError as exc:
        return str(exc)
    failed = not host_suite(project, tree, python)
    shutil.rmtree(tree.parent, ignore_errors=True)
    return None if failed else "the suite still passes with the bug in a plain venv"


def measure(
    daemon: Daemon,
    projects: tuple[Project, ...] = PROJECTS,
    only: str | None = None,
    keep_work: bool = False,
) -> list[Outcome]:
    """Every task of `projects` (or the one named `only`); `keep_work`: leave each project's
    work dir (its trees and coder's traces) under /var/tmp, to read why a task failed."""
    out: list[Outcome] = []
    for project in projects:
        sdist = fetch(project)
        python = host_venv(project)
        work = Path(tempfile.mkdtemp(prefix=f"realrepos-{project.key}-", dir="/var/tmp"))
        try:
            clean = unpack(sdist, work / "clean")
            clean_ok = host_suite(project, clean, python)
            for task in project.tasks:
                if only and task.name != only:
                    continue
                why = None if clean_ok else "the suite fails in a plain venv before the bug"
                why = why or check(project, task, sdist, work, python)
                if why:
                    out.append(Outcome(project.key, task.name, "dropped", why))
                else:
                    out.append(solve_task(daemon, project, task, sdist, work))
                print(json.dumps(asdict(out[-1])), flush=True)
        finally:
            if keep_work:
                print(f"kept {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
    return out


TITLE = "## coder on real PyPI projects (bench/realrepos.py)"


def write_section(path: Path, text: str) -> None:
    """Put `text` (this bench's section) into the results file at `path`, replacing the
    section of an earlier run and leaving every other section as it is."""
    old = path.read_text() if path.exists() else ""
    start = old.find(TITLE)
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = old.find("\n## ", start + len(TITLE))
    rest = old[end + 1 :] if end >= 0 else ""
    path.write_text(old[:start] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else ""))


def report(outcomes: list[Outcome], machine: bool = False, note: str = "") -> str:
    kept = [o for o in outcomes if o.status != "dropped"]
    fixed = [o for o in kept if o.status == "fixed"]
    setups = [o.setup_s for o in kept if o.setup_s]
    per_iter = [o.per_iteration_s for o in fixed if o.per_iteration_s]
    shown = sum(o.first_prompt_shows_bug for o in kept)
    med = statistics.median
    rows = [
        "| project | task | status | iterations | setup s | s per iteration | "
        "test runs s | bug in first prompt | reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {o.project} | {o.task} | {o.status} | {o.iterations} | {o.setup_s:.1f} | "
            f"{o.per_iteration_s:.2f} | {o.test_s:.1f} | "
            f"{'yes' if o.first_prompt_shows_bug else 'no'} | "
            f"{o.reason[:160] if o.status != 'fixed' else ''} |"
        )
    return "\n".join(
        [
            TITLE,
            "",
            *([*describe(), ""] if machine else []),
            *([note, ""] if note else []),
            "Pinned sdists with their own tests, one injected bug per task",
            "(bench/realrepos_tasks.py), `coder solve` on a real sandboxd; coder sets up each",
            "environment itself. Scripted model: the right edit once the buggy lines are in its",
            "prompt, else it asks",
            "(DEFINITION, then READ), else gives up. Tasks whose suite does not pass in a plain",
            "venv on the host, or does not fail with the bug, are dropped.",
            "",
            f"- fixed: **{len(fixed)}/{len(kept)}** ({len(outcomes) - len(kept)} dropped); "
            f"setup_failed: {sum(o.status == 'setup_failed' for o in kept)}; "
            f"gave_up: {sum(o.status == 'gave_up' for o in kept)}",
            f"- setup time (0 when a kept environment was reused): median "
            f"{med(setups) if setups else 0:.1f}s, max {max(setups, default=0):.1f}s",
            f"- time per iteration (solve wall minus setup, over iterations, fixed tasks; it "
            "includes the first test run, before any edit): "
            f"median {med(per_iter) if per_iter else 0:.2f}s",
            f"- the writer's first prompt held the buggy lines in {shown}/{len(kept)} tasks",
            "",
            *rows,
            "",
        ]
    )


def index_names() -> list[str]:
    """The names of the index hosts coder's setups will reach (the host's pip configuration,
    as coder resolves it). The daemon is told to trust them when they resolve to a private or
    reserved address (a local mirror, or a network like this one's that answers with one);
    every other private name stays refused."""
    return sorted({rule.rsplit(":", 1)[0] for rule in resolve_index(None).rules()})


def stop_daemon(daemon: Daemon) -> None:
    """Stop a daemon of `start_daemon` and remove its work dir."""
    daemon.stop()
    shutil.rmtree(daemon.workdir, ignore_errors=True)


def start_daemon(name: str = "realrepos") -> Daemon:
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-", dir="/var/tmp"))
    work.chmod(0o711)
    return Daemon(work, name, egress={"trusted_private_names": index_names()}).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--project", action="append", help="only this project (repeatable)")
    parser.add_argument("--task", default=None)
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the trees and traces under /var/tmp"
    )
    parser.add_argument("--out", type=Path, default=None, help="results file to update")
    args = parser.parse_args()
    projects = tuple(p for p in PROJECTS if not args.project or p.name in args.project)
    daemon = start_daemon()
    try:
        text = report(measure(daemon, projects, args.task, args.keep_work), machine=True)
        print(text)
        if args.out:
            write_section(args.out, text)
    finally:
        stop_daemon(daemon)


if __name__ == "__main__":
    main()
