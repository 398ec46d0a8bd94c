"""The `sandboxd` CLI, /v1/info, /openapi.json, settings, and cleanup at start and stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sandboxd.client import SyncClient
from sandboxd.errors import LimitTooHigh
from sandboxd.http import routes
from sandboxd.http.openapi import build_openapi
from sandboxd.models import RunRequest
from sandboxd.testing import leftover_cgroups, leftover_mounts, sandbox_processes
from tests.daemon import Daemon, free_port


def sandboxd(
    *args: str, d: Daemon | None = None, url: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    url = url or (d.url if d else "")
    token = d.token if d else ""
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SANDBOXD_URL": url, "SANDBOXD_TOKEN": token},
    )


def test_cli_run_hello(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text('print("hello")\n')
    proc = sandboxd("run", str(script), d=daemon)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")


def test_cli_run_language_from_suffix_and_exit_code(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text('echo "bash $BASH_VERSION" | cut -c1-4; exit 7\n')
    proc = sandboxd("run", str(script), d=daemon)
    assert (proc.returncode, proc.stdout) == (7, "bash\n")


def test_cli_timeout_has_its_own_exit_code(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\nprint('partial', flush=True)\ntime.sleep(30)\n")
    proc = sandboxd("run", str(script), "--timeout", "0.5", d=daemon)
    assert proc.returncode == 124
    assert proc.stdout == "partial\n"
    assert "timeout" in proc.stderr


def test_cli_memory_and_json(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "mem.py"
    script.write_text("x = bytearray(100 * 1024 * 1024)\n")
    proc = sandboxd("run", str(script), "--memory", "32", "--json", d=daemon)
    assert proc.returncode == 122
    assert json.loads(proc.stdout)["status"] == "memory_limit"


def test_cli_stdin_and_env(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text("import os, sys; print(os.environ['WHO'], sys.stdin.read())\n")
    proc = sandboxd("run", str(script), "--env", "WHO=me", d=daemon, stdin="piped")
    assert proc.stdout == "me piped\n"


def test_cli_refused_request_is_one_line(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    proc = sandboxd("run", str(script), "--memory", "999999", d=daemon)
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1
    assert "memory_mib" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_unreachable_daemon_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    proc = sandboxd("run", str(script), url=f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 125
    assert proc.stderr.startswith("sandboxd: error: cannot reach sandboxd")
    assert proc.stderr.count("\n") == 1


def test_cli_missing_file_is_one_line(daemon: Daemon) -> None:
    proc = sandboxd("run", "/nonexistent/file.py", d=daemon)
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1


def test_info(client: SyncClient) -> None:
    info = client.info()
    assert info.backend == "nsjail"
    assert info.backend_version
    assert info.capabilities.cgroup_version in (1, 2)
    assert info.capabilities.languages == ["python", "bash", "node"]
    assert info.default_limits.memory_mib == 256
    assert info.max_limits.memory_mib >= info.default_limits.memory_mib


def test_openapi_is_generated_from_the_models(daemon: Daemon) -> None:
    with urllib.request.urlopen(daemon.request("/openapi.json"), timeout=10) as resp:
        served = json.loads(resp.read())
    assert served == json.loads(json.dumps(build_openapi(routes.router())))
    schemas = served["components"]["schemas"]
    assert set(schemas["RunRequest"]["properties"]) == set(RunRequest.model_fields)
    assert schemas["Limits"]["properties"]["memory_mib"]["default"] == 256
    assert "/v1/runs" in served["paths"]


def test_settings_file_and_env_cap_requests(workdir: Path) -> None:
    d = Daemon(workdir, "capped", max_limits={"memory_mib": 128, "wall_time_s": 5})
    d.start(env={"SANDBOXD_MAX_LIMITS__PIDS": "32"})
    try:
        with d.client() as client:
            info = client.info()
            assert (info.max_limits.memory_mib, info.max_limits.wall_time_s) == (128, 5)
            assert info.max_limits.pids == 32
            # Defaults above a cap are lowered to it; explicit asks above it are refused.
            result = client.run(code="print(1)")
            assert result.status == "ok"
            assert (result.limits.memory_mib, result.limits.wall_time_s) == (128, 5)
            assert result.limits.pids == 32
            with pytest.raises(LimitTooHigh):
                client.run(code="", limits={"memory_mib": 129})
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"max_concurrent_runs": 0}, "max_concurrent_runs"),
        ({"docker": {"images": {"python": "x:1"}}}, "missing ['bash', 'node']"),
    ],
)
def test_bad_settings_fail_startup_in_one_line(
    workdir: Path, settings: dict[str, Any], says: str
) -> None:
    d = Daemon(workdir, "bad", **settings)
    with pytest.raises(RuntimeError) as err:
        d.start()
    assert "bad settings" in str(err.value) and says in str(err.value)
    assert "Traceback" not in str(err.value)


def test_state_dir_below_untraversable_dir_is_refused(workdir: Path) -> None:
    hidden = workdir / "hidden"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)
    d = Daemon(hidden, "hidden")
    with pytest.raises(RuntimeError) as err:
        d.start()
    assert "traverse" in str(err.value)


def start_long_run(d: Daemon) -> None:
    """Start a 60 s run in the background and wait until the daemon is running it."""
    body = json.dumps({"code": "import time; print('up', flush=True); time.sleep(60)"}).encode()

    def call() -> None:
        with contextlib.suppress(OSError):  # the daemon may be killed under it
            req = d.request("/v1/runs", data=body)
            urllib.request.urlopen(req, timeout=60).close()

    threading.Thread(target=call, daemon=True).start()
    with d.client() as client:
        for _ in range(200):  # at most ~10 s
            if client.info().active_runs == 1 and sandbox_processes():
                return
            time.sleep(0.05)
    pytest.fail("the long run never started")


@pytest.mark.parametrize("forked", [False, True], ids=["built by nsjail", "forked"])
def test_startup_reaps_what_a_crashed_daemon_left(workdir: Path, forked: bool) -> None:
    backend = {"pool": {"enabled": False}, "fork_server": forked}
    d = Daemon(workdir, "crashy", max_concurrent_runs=2, backend=backend)
    d.start()
    start_long_run(d)
    assert leftover_mounts(d.state_dir)
    d.stop(sig=signal.SIGKILL)
    # What the dead daemon owned is still there: its run's mounts and cgroup, and a jail
    # built by nsjail. A forked run ends with its fork server, which ends with the daemon
    # (it is the init of the run's pid namespace's parent).
    assert leftover_cgroups(d.cgroup_parent)
    deadline = time.monotonic() + 10
    while forked and sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bool(sandbox_processes()) is not forked
    # ...until a new daemon on the same state dir starts and reaps it.
    d2 = Daemon(workdir, "crashy", max_concurrent_runs=2, backend=backend)
    d2.start()
    try:
        assert sandbox_processes() == []
        assert leftover_mounts(d2.state_dir) == []
        assert leftover_cgroups(d2.cgroup_parent) == []
    finally:
        assert d2.stop() == 0


def test_sigterm_stops_runs_and_cleans_up(workdir: Path) -> None:
    d = Daemon(workdir, "graceful")
    d.start()
    start_long_run(d)
    assert d.stop() == 0
    assert sandbox_processes() == []
    assert leftover_mounts(d.state_dir) == []
    assert leftover_cgroups(d.cgroup_parent) == []
