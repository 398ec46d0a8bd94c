"""coder's CLI: replay, resume after a kill, apply, CI mode, cache, usage errors, progress on
stderr, starting a sandboxd of its own (and refusing an explicit one that is down), and the
examples' README run as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coder.testing.harness import (
    REPO,
    coder_env,
    example,
    run_coder,
    run_solve,
    scripted,
    solve,
    write_config,
)
from sandboxd.client import DEFAULT_URL
from tests.daemon import Daemon, free_port


def test_replay_gives_the_same_patch_without_the_model(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("textutils", tmp_path)
    with scripted("fixed_after_feedback") as server:
        _, first = solve(repo, server, daemon)
    assert first["status"] == "fixed"
    out = tmp_path / "replayed.diff"
    with scripted("none") as server:  # any model request would fail
        proc = run_coder(
            "replay", first["trace_path"], "--json", "--patch-out", str(out), env=coder_env(daemon)
        )
        assert server.requests == []
    replayed = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert replayed["status"] == "fixed" and replayed["iterations"] == first["iterations"]
    assert out.read_text() == Path(first["patch_path"]).read_text()
    assert replayed["trace_id"] != first["trace_id"]


def test_resume_after_the_process_is_killed(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("textutils", tmp_path)
    cfg = write_config(tmp_path / "cfg.toml")
    traces = repo / ".coder" / "traces"
    with scripted("resume") as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coder",
                "solve",
                str(repo),
                "--config",
                str(cfg),
                "--base-url",
                server.url,
                "--json",
            ],
            env=coder_env(daemon),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):  # until the second writer request is in flight (≤ 60 s)
                if len(server.requests) >= 2:
                    break
                time.sleep(0.1)
            assert len(server.requests) == 2
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    (trace,) = traces.glob("*.jsonl")
    kinds = [json.loads(line)["type"] for line in trace.read_text().splitlines()]
    assert kinds.count("model.reply") == 1 and "solve.end" not in kinds
    with scripted("resume_rest") as server:
        done = run_coder(
            "resume",
            str(trace),
            "--json",
            "--patch-out",
            str(tmp_path / "resumed.diff"),
            "--base-url",
            server.url,
            env=coder_env(daemon),
        )
        assert [r["model"] for r in server.requests] == ["writer", "reviewer"]
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert result["status"] == "fixed" and result["iterations"] == 2
    patch = (tmp_path / "resumed.diff").read_text()
    assert "title.lower()" in patch and "text.split())" in patch
    with daemon.client() as c:  # the killed solve's sandbox is cleaned up by hand here
        for sb in c.list_sandboxes():
            c.delete_sandbox(sb.id)


def test_apply_and_ci_mode(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    out = tmp_path / "ci-out"
    cfg = write_config(tmp_path / "cfg.toml")
    with scripted("fixed_first_try") as server:
        proc = run_coder(
            "solve",
            str(repo),
            "--config",
            str(cfg),
            "--base-url",
            server.url,
            "--ci",
            "--out-dir",
            str(out),
            "--apply",
            env=coder_env(daemon),
        )
    assert proc.returncode == 0, proc.stderr
    assert "return a + b" in (repo / "calc.py").read_text()
    assert json.loads((out / "result.json").read_text())["status"] == "fixed"
    assert (out / "patch.diff").read_text().startswith("diff --git a/calc.py b/calc.py")
    check = subprocess.run(
        ["git", "apply", "--check", "-R", str(out / "patch.diff")],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr  # the patch is exactly what was applied


def test_a_rerun_costs_nothing(daemon: Daemon, tmp_path: Path) -> None:
    first_repo = example("calculator", tmp_path / "a")
    with scripted("fixed_first_try") as server:
        _, first = solve(first_repo, server, daemon, cache_dir=str(tmp_path / "shared-cache"))
    again = example("calculator", tmp_path / "b")
    with scripted("none") as server:
        _, second = solve(again, server, daemon, cache_dir=str(tmp_path / "shared-cache"))
        assert server.requests == []
    assert second["status"] == "fixed"
    assert second["writer"]["cached_calls"] == 1 and second["writer"]["cost_usd"] == 0
    assert first["writer"]["cost_usd"] > 0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = coder_env(None)
    assert run_coder("solve", str(tmp_path / "missing"), env=env).returncode == 2
    assert run_coder("solve", "--max-iterations", "zero", env=env).returncode == 2
    repo = example("calculator", tmp_path)
    no_price = run_coder("solve", str(repo), "--model", "mystery-model", env=env)
    assert no_price.returncode == 2 and "no price" in no_price.stderr
    assert no_price.stderr.count("\n") == 1
    no_key = run_coder("solve", str(repo), env={**env, "OPENAI_API_KEY": ""})
    assert no_key.returncode == 2 and "OPENAI_API_KEY" in no_key.stderr
    bad_trace = tmp_path / "t.jsonl"
    bad_trace.write_text("not json\n{}\n")
    assert run_coder("replay", str(bad_trace), env=env).returncode == 2


def default_sandboxd_answers() -> bool:
    """Whether something listens on sandboxd's default address (then coder would use it)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 8765)) == 0


def test_starts_its_own_sandboxd_when_none_is_configured_and_says_where(tmp_path: Path) -> None:
    if default_sandboxd_answers():
        pytest.skip("a sandboxd answers on 127.0.0.1:8765: coder would use it")
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        cfg = write_config(tmp_path / "cfg.toml")
        env = coder_env(None)
        proc = run_coder(
            "solve", str(repo), "--config", str(cfg), "--base-url", server.url, "--json", env=env
        )
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed"
    events = [json.loads(x) for x in Path(result["trace_path"]).read_text().splitlines()]
    ready = next(e for e in events if e["type"] == "sandbox.ready")
    assert ready["url"] != DEFAULT_URL
    said = re.search(r"starting one for this solve on (\S+) \(state dir (\S+)\)", proc.stderr)
    assert said, proc.stderr
    assert said[1] == ready["url"] and said[2].endswith("/state")


@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_explicit_sandboxd_url_that_is_down_is_an_error(tmp_path: Path, how: str) -> None:
    repo = example("calculator", tmp_path)
    cfg = write_config(tmp_path / "cfg.toml")
    down = f"http://127.0.0.1:{free_port()}"
    flag = ["--sandboxd-url", down] if how == "flag" else []
    env = coder_env(None, **({"SANDBOXD_URL": down} if how == "env" else {}))
    with scripted("none") as server:
        proc = run_coder(
            "solve", str(repo), "--config", str(cfg), "--base-url", server.url, *flag, env=env
        )
    assert proc.returncode == 3, proc.stderr
    assert "starting one" not in proc.stderr  # no daemon of its own
    (error,) = [x for x in proc.stderr.splitlines() if "error" in x]
    assert down in error and "--sandboxd-url" in error, proc.stderr


def test_a_failing_own_sandboxd_shows_its_error(tmp_path: Path) -> None:
    if default_sandboxd_answers():
        pytest.skip("a sandboxd answers on 127.0.0.1:8765: coder would use it")
    repo = example("calculator", tmp_path)
    cfg = write_config(tmp_path / "cfg.toml")
    env = coder_env(None, SANDBOXD_MAX_CONCURRENT_RUNS="0")  # the daemon refuses its settings
    with scripted("none") as server:
        proc = run_coder(
            "solve", str(repo), "--config", str(cfg), "--base-url", server.url, env=env
        )
    assert proc.returncode == 3, proc.stderr
    assert "max_concurrent_runs" in proc.stderr and "exited at once" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_repository_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    proc = run_coder("solve", str(missing), env=coder_env(None))
    assert proc.returncode == 2
    assert proc.stderr == f"coder: error: {missing} does not exist: give the path of a " + (
        "repository (default: .)\n"
    )
    assert not missing.exists()


def test_apply_without_a_terminal_says_to_add_yes(tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("none") as server:
        proc = run_solve(repo, server, None, "--apply")
        assert server.requests == []
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--yes" in proc.stderr and "terminal" in proc.stderr


def test_progress_goes_to_stderr_and_a_closed_stdout_is_quiet(
    daemon: Daemon, tmp_path: Path
) -> None:
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon)  # --json: stdout must parse as JSON
    assert result["status"] == "fixed"
    assert "coder: [" not in proc.stdout
    progress = proc.stderr
    for line in (
        "coder: [setup] loading",
        "coder: [tests] iteration 0: failing (2 tests: tests/test_calc.py::test_add",
        "coder: [writer] iteration 1: asking writer",
        "coder: [writer] iteration 1: edited calc.py",
        "coder: [tests] iteration 1: passing",
        "coder: [reviewer] iteration 1: APPROVE",
    ):
        assert line in progress, progress
    assert re.search(r"\[reviewer\] replied; \d+ tokens, \$0\.\d{4} so far", progress), progress
    # `coder replay --json | head`: the reader goes away; no traceback, the SIGPIPE status.
    replay = subprocess.Popen(
        [sys.executable, "-m", "coder", "replay", result["trace_path"], "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=coder_env(daemon),
        text=True,
    )
    assert replay.stdout is not None and replay.stderr is not None
    replay.stdout.close()
    err = replay.stderr.read()
    assert replay.wait(timeout=120) == 141, err
    assert err == f"coder: replaying trace {result['trace_id']}\n"


def test_quiet_prints_only_the_outcome_in_good_english(daemon: Daemon, tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        proc = run_solve(repo, server, daemon, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("diff --git a/calc.py b/calc.py")
    assert re.fullmatch(r"coder: fixed \(.*\); 1 iteration; trace \S+\.jsonl\n", proc.stderr)


def test_the_examples_readme_works_as_written(daemon: Daemon, tmp_path: Path) -> None:
    readme = (REPO / "examples" / "README.md").read_text()
    (block,) = re.findall(r"```sh\n(.*?)```", readme, re.S)
    assert "8900" in block and "/tmp/calc" in block
    script = block.replace("8900", str(free_port())).replace("/tmp/calc", str(tmp_path / "calc"))
    env = {**coder_env(daemon), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    del env["OPENAI_API_KEY"]  # the README sets it
    proc = subprocess.Popen(
        ["bash", "-euc", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "+    return a + b" in out
    assert "coder: fixed" in err
