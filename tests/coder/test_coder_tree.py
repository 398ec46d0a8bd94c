"""The whole working tree reaches the sandbox: a repository of more files than one request
may carry, and gitignored generated files the code imports (named by `include_ignored`)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from coder.testing.harness import example, scripted, solve
from tests.daemon import Daemon


def test_a_repository_of_2500_files_solves(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    for i in range(2500):
        sub = repo / "data" / f"d{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.txt").write_text(f"file {i}\n")
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed", result


def git_repo_with_a_generated_file(tmp_path: Path) -> Path:
    """The calculator, in git, whose code imports a gitignored `_version.py`."""
    repo = example("calculator", tmp_path)
    calc = repo / "calc.py"
    calc.write_text("from _version import VERSION  # noqa: F401\n" + calc.read_text())
    (repo / "_version.py").write_text('VERSION = "1.0"\n')
    (repo / ".gitignore").write_text("_version.py\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    return repo


def test_an_ignored_generated_file_is_uploaded_when_a_glob_names_it(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = git_repo_with_a_generated_file(tmp_path)
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon, "--include-ignored", "_vers*.py")
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed", result


def test_an_ignored_file_stays_out_without_a_glob(daemon: Daemon, tmp_path: Path) -> None:
    repo = git_repo_with_a_generated_file(tmp_path)
    with scripted("none") as server:
        proc, result = solve(repo, server, daemon)
        assert server.requests == []  # an environment error is not the writer's to fix
    assert proc.returncode == 3, proc.stderr
    assert result["status"] == "setup_failed"
    assert result["setup"]["step"] == "preflight"
    assert "No module named '_version'" in result["setup"]["output_tail"]


def test_batches_follow_the_daemons_request_cap(workdir: Path, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    for i in range(6):  # 3.6 MB of text, in requests under a daemon's 1 MiB cap
        (repo / f"blob{i}.txt").write_text(secrets.token_hex(300_000))
    small = Daemon(workdir, "small-requests", max_request_bytes=1 << 20).start()
    try:
        with scripted("fixed_first_try") as server:
            proc, result = solve(repo, server, small)
    finally:
        assert small.stop() == 0
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed", result
