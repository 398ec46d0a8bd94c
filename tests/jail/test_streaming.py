"""Streaming runs as Server-Sent Events, and cancelling runs with DELETE /v1/runs/{id}."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sandboxd.errors import Conflict, NotFound
from sandboxd.models import RunEvent, RunResult
from tests.conftest import BACKENDS, assert_no_leftovers
from tests.daemon import Daemon

SLOW = "import time\nprint('first', flush=True)\ntime.sleep(1.0)\nprint('second')"


def _collect(daemon: Daemon, **fields: object) -> list[tuple[float, RunEvent]]:
    async def go() -> list[tuple[float, RunEvent]]:
        got = []
        async with daemon.aclient() as client:
            start = time.monotonic()
            async for event in client.stream_run(**fields):
                got.append((time.monotonic() - start, event))
        return got

    return asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_arrives_while_the_run_is_going(daemon: Daemon, backend: str) -> None:
    events = _collect(daemon, code=SLOW, backend=backend)
    kinds = [e.event for _, e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit"
    text = [(t, e.data) for t, e in events if e.event == "stdout"]
    assert "".join(d or "" for _, d in text) == "first\nsecond\n"
    first_at = next(t for t, d in text if d and "first" in d)
    exit_at, exit_event = events[-1]
    assert exit_at - first_at >= 0.8, "the first line must arrive before the run ends"
    assert exit_event.result is not None and exit_event.result.status == "ok"
    assert exit_event.result.stdout == "first\nsecond\n"
    assert exit_event.run_id == events[0][1].run_id == exit_event.result.id


def test_wire_format_and_trace_headers(daemon: Daemon) -> None:
    body = json.dumps({"language": "bash", "code": "echo out; echo err >&2"}).encode()
    req = daemon.request("/v1/runs", data=body, method="POST")
    req.add_header("Accept", "text/event-stream")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert len(resp.headers["X-Trace-Id"]) == 32
        raw = resp.read().decode()
    blocks = [b for b in raw.split("\n\n") if b]
    names = [b.splitlines()[0] for b in blocks]
    assert names[0] == "event: start" and names[-1] == "event: exit"
    assert {"event: stdout", "event: stderr"} <= set(names)
    for block in blocks:
        name, data = block.splitlines()
        event = RunEvent.model_validate_json(data.removeprefix("data: "))
        assert name == f"event: {event.event}"


def test_output_cap_holds_in_the_stream(daemon: Daemon) -> None:
    events = _collect(
        daemon, language="bash", code="yes | head -c 100000", limits={"output_bytes": 1000}
    )
    streamed = "".join(e.data or "" for _, e in events if e.event == "stdout")
    assert len(streamed) == 1000
    result = events[-1][1].result
    assert result is not None and result.stdout_truncated


def test_a_refused_request_is_an_ordinary_error_answer(daemon: Daemon) -> None:
    body = json.dumps({"language": "cobol", "code": "x"}).encode()
    req = daemon.request("/v1/runs", data=body, method="POST")
    req.add_header("Accept", "text/event-stream")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"]["field"] == "language"


def test_sandbox_runs_stream(daemon: Daemon) -> None:
    with daemon.client() as client:
        box = client.create_sandbox(language="python")
        try:
            events = _collect(daemon, code=SLOW, sandbox_id=box.id)
        finally:
            client.delete_sandbox(box.id)
    assert events[0][1].event == "start"
    result = events[-1][1].result
    assert result is not None and result.sandbox_id == box.id and result.stdout.endswith("second\n")


def test_cli_prints_live(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    env = {**os.environ, "SANDBOXD_URL": daemon.url, "SANDBOXD_TOKEN": daemon.token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandboxd", "run", str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    still_running = proc.poll() is None
    rest, _ = proc.communicate(timeout=60)
    assert first == "first\n" and still_running, "the first line must print before the end"
    assert rest == "second\n" and proc.returncode == 0


def cancel_after_first_output(daemon: Daemon, **fields: object) -> tuple[RunResult, list[RunEvent]]:
    """Stream a run, cancel it once it has printed, and wait for its stream to end: the
    cancel's answer and every event."""

    async def go() -> tuple[RunResult, list[RunEvent]]:
        async with daemon.aclient() as client:
            events: list[RunEvent] = []

            async def consume() -> None:
                async for event in client.stream_run(**fields):
                    events.append(event)

            task = asyncio.create_task(consume())
            for _ in range(1500):  # 30 s at most
                if any(e.event == "stdout" for e in events):
                    break
                await asyncio.sleep(0.02)
            run_id = events[0].run_id
            assert run_id is not None
            cancelled = await client.cancel_run(run_id)
            await asyncio.wait_for(task, 30)
            return cancelled, events

    return asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_kills_the_tree_and_returns_the_partial_result(daemon: Daemon, backend: str) -> None:
    # one write of the whole line: `print` under `python -u` writes "started" and "\n"
    # apart, and on a loaded host the cancel could land between them
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen(['sleep', '300'])\n"
        "sys.stdout.write('started\\n')\n"
        "sys.stdout.flush()\n"
        "time.sleep(300)\n"
    )

    started = time.monotonic()
    cancelled, events = cancel_after_first_output(daemon, code=code, backend=backend)
    last = events[-1]
    assert time.monotonic() - started < 30
    assert getattr(cancelled, "status", None) == "cancelled"
    assert getattr(cancelled, "stdout", None) == "started\n"
    assert isinstance(last, RunEvent) and last.result is not None
    assert last.result.status == "cancelled"
    with daemon.client() as client:
        record = client.get_run(last.result.id)
    assert record.status == "cancelled" and record.result == last.result
    assert_no_leftovers(daemon)


def test_cancel_errors(daemon: Daemon) -> None:
    other = daemon.make_token("someone-else", "run")
    with daemon.client() as client, daemon.client(other) as stranger:
        done = client.run(language="bash", code="true")
        with pytest.raises(Conflict):
            client.cancel_run(done.id)
        with pytest.raises(NotFound):
            client.cancel_run("run_doesnotexist")
        with pytest.raises(NotFound):  # another tenant's run does not exist for it
            stranger.cancel_run(done.id)


@pytest.mark.parametrize("where", ["run", "sandbox"])
def test_a_client_that_goes_away_cancels_its_run(daemon: Daemon, where: str) -> None:
    """Its run ends `cancelled`, saying why (`interrupted` is for a daemon that died)."""
    body = json.dumps(
        {"language": "bash", "code": "echo up; sleep 300", "limits": {"wall_time_s": 60}}
    ).encode()
    path = "/v1/runs"
    if where == "sandbox":
        with daemon.client() as client:
            path = f"/v1/sandboxes/{client.create_sandbox(limits={'disk_mib': 4}).id}/runs"
    req = daemon.request(path, data=body, method="POST")
    req.add_header("Accept", "text/event-stream")
    resp = urllib.request.urlopen(req, timeout=30)
    run_id = None
    while run_id is None:
        line = resp.readline().decode()
        if line.startswith("data: "):
            run_id = RunEvent.model_validate_json(line[6:]).run_id
    while b"up" not in resp.readline():
        pass
    resp.close()
    with daemon.client() as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if client.get_run(run_id).status != "running":
                break
            time.sleep(0.05)
        record = client.get_run(run_id)
        assert record.status == "cancelled", record
        assert record.result is not None and record.result.status == "cancelled"
        assert "client disconnected" in (record.result.message or "")
        assert record.result.stdout == "up\n"
        if where == "sandbox":
            client.delete_sandbox(path.split("/")[3])
    assert_no_leftovers(daemon)
