"""Prepared environments: the repository's `.coder/setup.sh` runs in the sandbox before the
tests, and an environment that cannot be prepared, or tests that do not even collect, stop
the solve with `setup_failed` (exit 3) instead of going to the writer as a bug to fix."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from coder.testing.harness import example, run_solve, scripted, solve
from tests.daemon import Daemon

#: No setup here installs anything; should one try, the index it may reach is a reserved name
#: that resolves nowhere (never pip's default).
INDEX = {"index_url": "http://index.test:8080/simple/"}


def with_generated_file(tmp_path: Path, setup_sh: str | None) -> Path:
    """The calculator in git, importing a gitignored `_version.py` that only a setup writes."""
    repo = example("calculator", tmp_path)
    calc = repo / "calc.py"
    calc.write_text("from _version import VERSION  # noqa: F401\n" + calc.read_text())
    (repo / ".gitignore").write_text("_version.py\n.coder/traces/\n")
    if setup_sh is not None:
        (repo / ".coder").mkdir()
        (repo / ".coder" / "setup.sh").write_text(setup_sh)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    return repo


def test_setup_sh_prepares_the_sandbox(daemon: Daemon, tmp_path: Path) -> None:
    repo = with_generated_file(tmp_path, "echo 'VERSION = \"1.0\"' > _version.py\n")
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon, **INDEX)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed", result
    (step,) = result["setup_steps"]
    assert step["step"] == ".coder/setup.sh" and step["exit_code"] == 0
    assert result["setup"] is None and result["setup_time_s"] > 0
    assert not (repo / "_version.py").exists()  # what the setup made stays in the sandbox


def test_a_failing_setup_sh_stops_the_solve(daemon: Daemon, tmp_path: Path) -> None:
    script = "echo installing things\necho 'E: no such package: frobnicate' >&2\nexit 7\n"
    repo = with_generated_file(tmp_path, script)
    with scripted("none") as server:
        proc, result = solve(repo, server, daemon, **INDEX)
        assert server.requests == []
    assert proc.returncode == 3, proc.stderr
    assert result["status"] == "setup_failed"
    failure = result["setup"]
    assert failure["step"] == ".coder/setup.sh" and failure["exit_code"] == 7
    assert "no such package: frobnicate" in failure["output_tail"]
    assert "installing things" in failure["output_tail"]
    assert result["tests_before"] is None and result["iterations"] == 0


def test_a_setup_that_hangs_is_stopped_by_its_timeout(daemon: Daemon, tmp_path: Path) -> None:
    repo = with_generated_file(tmp_path, "echo waiting\nsleep 600\n")
    with scripted("none") as server:
        proc, result = solve(repo, server, daemon, setup_timeout_s=2, **INDEX)
    assert proc.returncode == 3 and result["status"] == "setup_failed", proc.stderr
    assert result["setup"]["status"] == "timeout"
    assert "did not finish within 2s" in result["setup"]["reason"]
    assert result["wall_time_s"] < 60


def test_a_setup_command_overrides_setup_sh_and_the_cli_says_why(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = with_generated_file(tmp_path, "exit 0\n")
    with scripted("none") as server:
        proc = run_solve(repo, server, daemon, "--setup", "echo no luck; exit 5", **INDEX)
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("coder: setup_failed (setup (exit 5): it exited with status 5)"), last
    assert "  | no luck" in proc.stderr


def test_tests_that_do_not_collect_are_not_sent_to_the_writer(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    (repo / "pytest.ini").write_text("[pytest]\npythonpath = .\naddopts = --no-such-option\n")
    with scripted("none") as server:
        proc, result = solve(repo, server, daemon, **INDEX)
        assert server.requests == []
    assert proc.returncode == 3 and result["status"] == "setup_failed", proc.stderr
    failure = result["setup"]
    assert failure["step"] == "preflight" and failure["exit_code"] == 4
    assert "unrecognized arguments: --no-such-option" in failure["reason"]
    assert result["tests_before"]["exit_code"] == 4
    events = [json.loads(x) for x in Path(result["trace_path"]).read_text().splitlines()]
    assert [e["ok"] for e in events if e["type"] == "preflight"] == [False]


def test_a_bug_that_breaks_the_import_still_goes_to_the_writer(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    calc = repo / "calc.py"
    calc.write_text(calc.read_text().replace("def add(a, b):", "def plus(a, b):"))
    with scripted("gives_up") as server:
        proc, result = solve(repo, server, daemon, **INDEX)
        assert len(server.requests) == 1
    assert result["status"] == "gave_up", proc.stderr
    assert result["tests_before"]["exit_code"] == 2
