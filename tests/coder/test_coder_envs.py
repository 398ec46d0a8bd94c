"""Prepared environments kept as snapshots (coder.envs): after a setup, coder snapshots the
sandbox; the next solve of the same repository state starts from that snapshot and runs no
setup, with the current working tree (files deleted since are gone, the setup's generated files
stay); a change to the setup changes the key; `coder envs list|prune` end to end.

The repository's own tests check the sandbox: that the setup ran once in the environment the
tests see (a counter it appends to in `.coder-venv`) and that a deleted file does not linger."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coder.testing.harness import coder_env, example, run_coder, scripted, solve
from sandboxd.models import AuditRecord
from tests.daemon import Daemon

INDEX = {"index_url": "http://index.test:8080/simple/"}
SETUP_SH = (
    "mkdir -p .coder-venv && echo run >> .coder-venv/marker && pwd > .coder-venv/where\n"
    "echo 'VERSION = \"1.0\"' > _version.py\n"
)
ENV_TESTS = """\
import os
from pathlib import Path


def test_the_setup_ran_once():
    assert Path(".coder-venv/marker").read_text().split() == ["run"]


def test_absolute_paths_the_setup_recorded_still_hold():  # as a venv's and an editable install's
    assert Path(".coder-venv/where").read_text().strip() == os.getcwd()
"""
GONE_TEST = """

def test_a_deleted_file_is_gone():
    assert not Path("stale.txt").exists()
"""


@pytest.fixture(scope="module")
def envs_daemon(workdir: Path) -> Iterator[Daemon]:
    """A daemon of this module's own: `envs prune --all` deletes every env it keeps."""
    d = Daemon(workdir, "coder-envs")
    d.start()
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


def repository(tmp_path: Path) -> Path:
    """The calculator in git, importing a gitignored `_version.py` that only its setup makes."""
    repo = example("calculator", tmp_path)
    calc = repo / "calc.py"
    calc.write_text("from _version import VERSION  # noqa: F401\n" + calc.read_text())
    (repo / ".gitignore").write_text("_version.py\n.coder/traces/\n")
    (repo / ".coder").mkdir()
    (repo / ".coder" / "setup.sh").write_text(SETUP_SH)
    (repo / "tests" / "test_env.py").write_text(ENV_TESTS)
    (repo / "stale.txt").write_text("deleted before the second solve\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    return repo


def solved(repo: Path, daemon: Daemon, *extra: str) -> dict[str, Any]:
    with scripted("fixed_first_try") as server:
        proc, result = solve(repo, server, daemon, *extra, **INDEX)
    assert proc.returncode == 0 and result["status"] == "fixed", proc.stderr[-3000:]
    return result


def envs(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_coder("envs", *args, env=coder_env(daemon), timeout_s=60)


def audit(daemon: Daemon) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    with daemon.client() as c:
        after: int | None = 0
        for _ in range(1000):
            if after is None:
                break
            page = c.audit(after, 500)
            records += page.records
            after = page.next_after
    return records


def events(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(result["trace_path"]).read_text().splitlines()]


def test_the_next_solve_starts_from_the_kept_environment(
    envs_daemon: Daemon, tmp_path: Path
) -> None:
    repo = repository(tmp_path)
    first = solved(repo, envs_daemon)
    assert [s["step"] for s in first["setup_steps"]] == [".coder/setup.sh"]
    assert first["env"]["reused"] is False and first["env"]["snapshot_id"]
    key = first["env"]["key"]

    # The same repository state (the setup's inputs unchanged; other files changed).
    (repo / "stale.txt").unlink()
    (repo / "tests" / "test_env.py").write_text(ENV_TESTS + GONE_TEST)
    second = solved(repo, envs_daemon)
    fork_s, ready_s = second["env"].pop("fork_s"), second["env"].pop("ready_s")
    assert second["env"] == {"key": key, "reused": True, "snapshot_id": first["env"]["snapshot_id"]}
    assert 0 < fork_s <= ready_s  # the fork's own time, then the tree brought up to date
    assert first["env"]["fork_s"] is None  # set up, not forked
    assert second["setup_steps"] == [] and second["setup_time_s"] == 0
    assert not [e for e in events(second) if e["type"].startswith("setup.")]
    failing = second["tests_before"]["failing"]  # the calculator's bug only: the env tests pass
    assert failing and all(t.startswith("tests/test_calc.py::test_add") for t in failing)
    assert "4 passed" in second["tests_before"]["summary"]
    (ready,) = [e for e in events(second) if e["type"] == "sandbox.ready"]
    (created,) = [
        r
        for r in audit(envs_daemon)
        if r.action == "sandbox.create" and r.target == ready["sandbox_id"]
    ]  # a fork of the kept snapshot, with the network off like every test run
    assert created.request["from_snapshot"] == first["env"]["snapshot_id"]
    assert created.request["network"]["mode"] == "none"
    assert second["tests_after"]["passed"] and second["files_changed"] == ["calc.py"]

    # A changed setup is another environment: it runs again, and is kept as well.
    (repo / ".coder" / "setup.sh").write_text(SETUP_SH + "# and something new\n")
    third = solved(repo, envs_daemon)
    assert third["env"]["key"] != key and third["env"]["reused"] is False
    assert [s["step"] for s in third["setup_steps"]] == [".coder/setup.sh"]

    # --fresh-env runs the setup even though the environment is kept.
    fresh = solved(repo, envs_daemon, "--fresh-env")
    assert fresh["env"]["key"] == third["env"]["key"] and fresh["env"]["reused"] is False
    assert len(fresh["setup_steps"]) == 1


def test_envs_list_and_prune(envs_daemon: Daemon, tmp_path: Path) -> None:
    repo = repository(tmp_path)
    # A setup that makes no `.coder-venv`: the environment is kept all the same.
    (repo / ".coder" / "setup.sh").write_text("echo 'VERSION = \"1.0\"' > _version.py\n")
    (repo / "tests" / "test_env.py").unlink()
    result = solved(repo, envs_daemon)
    key, snap = result["env"]["key"], result["env"]["snapshot_id"]
    assert snap and result["env"]["reused"] is False

    listed = envs(envs_daemon, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["KEY", "REPO", "SIZE", "CREATED", "EXPIRES", "SNAPSHOT"]
    (row,) = [r for r in rows if r.endswith(snap)]
    assert row.split()[:2] == [key, "calculator"] and "MiB" in row
    as_json = json.loads(envs(envs_daemon, "list", "--json").stdout)
    (kept,) = [s for s in as_json["snapshots"] if s["id"] == snap]
    # A cache on the daemon: it goes after coder's env_ttl_s (14 days) unused.
    assert kept["ttl_s"] == 14 * 86400 and row.split()[5] == kept["expires_at"][:19] + "Z"

    usage = envs(envs_daemon, "prune")
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1, usage.stderr
    assert "--older-than-s N, or --all" in usage.stderr
    young = envs(envs_daemon, "prune", "--older-than-s", "3600")
    assert (young.returncode, young.stdout) == (0, "")

    with envs_daemon.client() as c:
        fork = c.create_sandbox(language="bash", from_snapshot=snap, limits={"disk_mib": 16}).id
        try:
            busy = envs(envs_daemon, "prune", "--all")
            assert busy.returncode == 1
            (line,) = [x for x in busy.stderr.splitlines() if snap in x]
            assert line.startswith(f"coder: {snap} is in use, left:") and fork in line
        finally:
            c.delete_sandbox(fork)
    pruned = envs(envs_daemon, "prune", "--all")
    assert pruned.returncode == 0, pruned.stderr
    assert any(
        x.startswith(f"deleted {key}") and x.endswith(snap) for x in pruned.stdout.splitlines()
    )
    empty = envs(envs_daemon, "list")
    assert empty.stdout == "" and "keeps no environments" in empty.stderr

    gone = run_coder(
        "envs", "list", "--sandboxd-url", "http://127.0.0.1:9", env=coder_env(None), timeout_s=60
    )
    assert gone.returncode == 3 and gone.stderr.count("\n") == 1, gone.stderr
    assert "kept by a running sandboxd" in gone.stderr
