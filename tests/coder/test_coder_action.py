"""The GitHub Action's script against a local bare git remote: a branch is pushed only when
coder fixed the tests; the draft-PR step is behind CODER_OPEN_PR."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from coder.testing.harness import REPO, coder_env, example, scripted, write_config
from tests.daemon import Daemon

SCRIPT = REPO / "scripts" / "coder-action.sh"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def checkout(tmp_path: Path, name: str) -> tuple[Path, Path]:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    work = example(name, tmp_path)
    git("init", "-q", "-b", "main", cwd=work)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "0",
        cwd=work,
    )
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "failing", cwd=work)
    git("remote", "add", "origin", str(remote), cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return work, remote


def run_action(
    work: Path, server_url: str, daemon: Daemon, **extra: str
) -> subprocess.CompletedProcess[str]:
    # a setup's index is a reserved name that resolves nowhere (never pip's default)
    cfg = write_config(work.parent / "coder.toml", index_url="http://index.test:8080/simple/")
    env = coder_env(
        daemon,
        CODER_BIN=f"{sys.executable} -m coder",
        CODER_CONFIG=str(cfg),
        CODER_BASE_URL=server_url,
        CODER_OUT=str(work.parent / "out"),
        GITHUB_RUN_ID="42",
        **extra,
    )
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=work, env=env, capture_output=True, text=True, timeout=180
    )


def test_fixed_pushes_a_branch_without_a_pr(daemon: Daemon, tmp_path: Path) -> None:
    work, remote = checkout(tmp_path, "calculator")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    setup = f"echo action setup {secrets.token_hex(4)}"
    with scripted("fixed_first_try") as server:
        proc = run_action(
            work, server.url, daemon, CODER_SETUP=setup, PATH=f"{bin_dir}:{os.environ['PATH']}"
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((work.parent / "out" / "result.json").read_text())
    assert [(s["step"], s["command"]) for s in result["setup_steps"]] == [("setup", setup)]
    assert "pushed coder/fix-42" in proc.stdout
    branches = git("branch", "--list", cwd=remote)
    assert "coder/fix-42" in branches
    fixed = git("show", "coder/fix-42:calc.py", cwd=remote)
    assert "return a + b" in fixed
    assert git("log", "-1", "--format=%s", "coder/fix-42", cwd=remote).strip() == (
        "coder: make the failing tests pass"
    )
    body = git("log", "-1", "--format=%b", "coder/fix-42", cwd=remote)
    assert re.search(r"^Fixed in 1 iteration; tests before: .+\.$", body, re.M), body
    assert re.search(r"^Trace id [0-9a-f]{32}\.$", body, re.M), body
    assert "main" in branches and "return a - b" in git("show", "main:calc.py", cwd=remote)


def test_not_fixed_pushes_nothing(daemon: Daemon, tmp_path: Path) -> None:
    work, remote = checkout(tmp_path, "calculator")
    with scripted("gives_up") as server:
        proc = run_action(work, server.url, daemon)
    assert proc.returncode == 1
    assert "status=gave_up" in proc.stdout
    assert git("branch", "--list", cwd=remote).split() == ["main"]


def test_pr_step_is_draft_and_behind_the_flag(daemon: Daemon, tmp_path: Path) -> None:
    """GitHub is out of reach here, so `gh` is a recorder on PATH; only this step uses one."""
    work, _remote = checkout(tmp_path, "calculator")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gh-calls"
    (bin_dir / "gh").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "gh").chmod(0o755)
    with scripted("fixed_first_try") as server:
        proc = run_action(
            work, server.url, daemon, CODER_OPEN_PR="1", PATH=f"{bin_dir}:{os.environ['PATH']}"
        )
    assert proc.returncode == 0, proc.stderr
    args = calls.read_text()
    assert args.startswith("pr create --draft --head coder/fix-42")


def test_candidates_are_passed_through(daemon: Daemon, tmp_path: Path) -> None:
    work, remote = checkout(tmp_path, "calculator")
    with scripted("candidates_vote") as server:
        proc = run_action(work, server.url, daemon, CODER_CANDIDATES="3")
        assert server.steps_left == 0  # all three candidates asked
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((work.parent / "out" / "result.json").read_text())
    assert len(result["candidates"]) == 3 and result["chosen_candidate"] == 2
    body = git("log", "-1", "--format=%b", "coder/fix-42", cwd=remote)
    assert "Candidate 2 of 3 chosen; 3 of 3 candidates green." in body, body
    assert "return a + b" in git("show", "coder/fix-42:calc.py", cwd=remote)
