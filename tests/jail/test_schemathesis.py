"""Schemathesis against a running daemon's `/openapi.json`: no 5xx, whatever it generates.

Bounded (a few examples per operation, ~30 s) and with `--checks all` but one:
`positive_data_acceptance` wants every schema-valid request accepted, while the daemon also
refuses what the schema cannot say (a limit above this daemon's cap, an image on nsjail, an
allowlist on a daemon without egress): a 400 naming the field, which is the point.
At 5 examples per operation it takes about 30 s. It covers
every route the document describes (all of them), but on a daemon of its own, so that the
sandboxes it creates do not show in the shared daemon's tenant.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.daemon import Daemon

TIMEOUT_S = 120


def test_schemathesis_finds_no_server_error(workdir: Path, tmp_path: Path) -> None:
    daemon = Daemon(workdir, "fuzzed").start()
    try:
        check(daemon, tmp_path)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]


def check(daemon: Daemon, tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{daemon.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {daemon.token}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        # Its warnings are not failures: file and cancel routes answer 404 to the ids it
        # invents (it has no link from the create that would give it real ones), and a run in
        # a sandbox refuses what this daemon does not allow (the 400s said above).
        "--warnings",
        "off",
        "--max-examples",
        "5",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-6000:]
    assert "Server error" not in out
    report = next(tmp_path.rglob("*.xml")).read_text()
    assert 'failures="0"' in report and 'errors="0"' in report, report[:2000]
