"""What the writer's first prompt holds, measured: the share of tasks in which it contains the
buggy lines (issue 16's measure of "a writer that can find the code").

A task is a repository with a failing test suite and the lines its bug is on
(`tests/fixtures/repos/manifest.json`: the examples and the real-repo fixtures). Its tests run
here, in a throwaway copy, with this Python's pytest (no sandbox: the fixtures are ours); the
output is digested as the loop digests it, and the first writer prompt is built from it exactly
as a solve builds it. Nothing of a model is involved.

    python -m coder.testing.firstprompt                  # each task and the share
    python -m coder.testing.firstprompt --json           # the same as one JSON object
    python -m coder.testing.firstprompt --manifest FILE  # other tasks (roots relative to it
                                                         # when not found in the checkout)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coder import repo as repo_files
from coder.agents.writer import Writer, WriterView
from coder.digest import digest
from coder.testing.harness import REPO

MANIFEST = REPO / "tests" / "fixtures" / "repos" / "manifest.json"
TASK = "Make the failing tests pass."


@dataclass
class Task:
    name: str
    root: Path
    path: str
    buggy: list[str]
    #: pytest's arguments for this task (the test command is `pytest -q ARGS`).
    args: list[str]


def tasks(manifest: Path = MANIFEST) -> list[Task]:
    data = json.loads(manifest.read_text())["tasks"]
    out = []
    for name, t in data.items():
        root = REPO / t["root"]
        if not root.is_dir():
            root = manifest.parent / t["root"]
        out.append(Task(name, root, t["path"], list(t["buggy"]), list(t.get("args", []))))
    return out


def first_prompt(root: Path, args: list[str] | None = None, timeout_s: float = 300) -> str:
    """The user part of the writer's first prompt for the repository at `root`."""
    with tempfile.TemporaryDirectory(prefix="coder-firstprompt-") as tmp:
        copy = Path(tmp) / root.name
        shutil.copytree(root, copy)
        # No third-party plugins: the sandbox's pytest has none, and they cost seconds here.
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        env.pop("PYTHONPATH", None)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(args or [])],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        files = asyncio.run(repo_files.load(copy))
    d = digest(run.returncode, "failed" if run.returncode else "ok", run.stdout, run.stderr)
    messages = Writer().messages(WriterView(TASK, d, files.text))
    return messages[-1]["content"]


def shows_bug(prompt: str, task: Task) -> bool:
    """Whether every buggy line stands in the prompt as a line of its own."""
    lines = set(prompt.splitlines())
    return all(b in lines for b in task.buggy)


@dataclass
class Outcome:
    name: str
    shown: bool
    prompt_chars: int
    #: Where the buggy file's lines stand in the prompt: "whole", "regions" or "absent".
    file_shown: str


def measure(task: Task) -> Outcome:
    prompt = first_prompt(task.root, task.args)
    if f"{task.path}\n```\n" in prompt:
        how = "whole"
    elif f"{task.path} lines " in prompt:
        how = "regions"
    else:
        how = "absent"
    return Outcome(task.name, shows_bug(prompt, task), len(prompt), how)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    outcomes = [measure(t) for t in tasks(args.manifest)]
    hits = sum(o.shown for o in outcomes)
    if args.json:
        report = {
            "shown": hits,
            "tasks": len(outcomes),
            "share": round(hits / max(1, len(outcomes)), 4),
            "by_task": [o.__dict__ for o in outcomes],
        }
        print(json.dumps(report, indent=1))
        return
    for o in outcomes:
        state = "shown" if o.shown else "NOT shown"
        print(f"{o.name:20} {state:9} (file: {o.file_shown}; prompt {o.prompt_chars} chars)")
    print(f"share: {hits}/{len(outcomes)}")


if __name__ == "__main__":
    main()
