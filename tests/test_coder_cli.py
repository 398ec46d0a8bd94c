"""coder's CLI: replay, resume after a kill, apply, CI mode, cache, usage errors, and
starting a sandboxd of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.coder_helpers import coder_env, example, run_coder, scripted, solve, write_config
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


def test_starts_its_own_sandboxd_when_none_is_reachable(tmp_path: Path) -> None:
    repo = example("calculator", tmp_path)
    with scripted("fixed_first_try") as server:
        cfg = write_config(tmp_path / "cfg.toml")
        env = coder_env(None, SANDBOXD_URL=f"http://127.0.0.1:{free_port()}")
        proc = run_coder(
            "solve", str(repo), "--config", str(cfg), "--base-url", server.url, "--json", env=env
        )
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed"
    events = [json.loads(x) for x in Path(result["trace_path"]).read_text().splitlines()]
    ready = next(e for e in events if e["type"] == "sandbox.ready")
    assert ready["url"] != env["SANDBOXD_URL"]
