"""A coder solve watched in the Studio as it goes: the scripted model (slowed down, so each
round can be seen arrive), a real `coder solve` subprocess, the real daemon it reports to."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from coder.testing.harness import FIXTURES, LoopbackServer, coder_env, example, write_config
from coder.testing.scripted import load_steps, make_app
from tests.daemon import Daemon
from tests.ui.conftest import Studio

STEP_DELAY_S = 1.5
SOLVE_TIMEOUT_S = 120


def test_watch_a_solve_round_by_round(studio: Studio, daemon: Daemon, tmp_path: Path) -> None:
    steps = [{**s, "delay_s": STEP_DELAY_S} for s in load_steps(FIXTURES / "reviewer_revise.json")]
    server = LoopbackServer(make_app(steps)).start()
    repo = example("calculator", tmp_path)
    task = f"Make the failing tests pass (studio {secrets.token_hex(4)})."  # this solve's row
    cfg = write_config(tmp_path / "calculator.toml", task=task)
    patch_out = tmp_path / "fix.diff"
    args = ["solve", str(repo), "--config", str(cfg), "--base-url", server.url]
    args += ["--json", "--patch-out", str(patch_out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "coder", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=coder_env(daemon),
        stdin=subprocess.DEVNULL,
    )
    try:
        studio.sign_in(path="solves")
        page = studio.page
        row = f"tr:has-text('{task}') a"
        page.wait_for_selector(row, timeout=60_000)
        page.click(row)
        page.wait_for_selector("li.round[data-round='1']", timeout=60_000)
        # live: round 1 is on the page while the solve still runs, before round 2 exists
        assert page.locator("h1 .status-running").count() == 1
        assert page.locator("li.round[data-round='2']").count() == 0
        page.wait_for_selector("li.round[data-round='1'] .verdict-REVISE", timeout=60_000)
        assert "hard-codes" in page.locator("li.round[data-round='1'] .verdict").inner_text()
        page.wait_for_selector("li.round[data-round='2'] .verdict-APPROVE", timeout=60_000)
        page.wait_for_selector("h1 .status-fixed", timeout=60_000)
        out, err = proc.communicate(timeout=SOLVE_TIMEOUT_S)
        result = json.loads(out)
        assert result["status"] == "fixed", err
        before = page.locator("li.round[data-round='0'] .failing").inner_text()
        assert "tests/test_calc.py::test_add" in before
        diff = page.locator("li.round[data-round='2'] pre.diff").inner_text()
        assert "+    return a + b" in diff
        assert page.locator("li.round[data-round='2'] .tests-pass").count() == 1
        usage = page.locator("table.list").first.inner_text()
        assert "writer" in usage and "reviewer" in usage
        assert result["trace_id"] in page.locator("table.kv").inner_text()
        runs = page.locator("table.solve-runs tbody tr")
        assert runs.count() >= 3  # the tests before, after round 1 and after round 2
        studio.shot("solve")
        with page.expect_download() as got:
            page.click("button:has-text('Download patch')")
        saved = tmp_path / "downloaded.patch"
        got.value.save_as(saved)
        assert saved.read_text() == patch_out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        server.stop()
