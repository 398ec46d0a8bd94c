"""Trace ids end to end, JSON logs, Prometheus metrics that move, OpenTelemetry export."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sandboxd.client import SyncClient
from sandboxd.errors import Unauthorized
from sandboxd.testing import audit_trail
from tests.daemon import Daemon, free_port
from tests.jail.test_pool import wait_ready

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE}-b7ad6b7169203331-01"


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)"
    m = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_traceparent_reaches_result_header_audit_and_logs(daemon: Daemon) -> None:
    req = daemon.request("/v1/runs", json.dumps({"code": "print('traced')"}).encode())
    req.add_header("traceparent", PARENT)
    with urllib.request.urlopen(req, timeout=30) as resp:
        result = json.loads(resp.read())
        assert resp.headers["X-Trace-Id"] == TRACE
        assert resp.headers["traceparent"].startswith(f"00-{TRACE}-")
    assert result["trace_id"] == TRACE
    with daemon.client() as c:
        records = [r for r in audit_trail(c) if r.trace_id == TRACE]
        assert [r.action for r in records] == ["run.create"]
        assert records[0].target == result["id"]
    lines = [json.loads(ln) for ln in daemon.log.read_text().splitlines() if ln.startswith("{")]
    assert any(ln.get("trace_id") == TRACE and ln.get("run_id") == result["id"] for ln in lines)


def test_invalid_traceparent_gets_a_fresh_trace_id(daemon: Daemon) -> None:
    req = daemon.request("/v1/info")
    req.add_header("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Trace-Id"])
        assert resp.headers["X-Trace-Id"] != "0" * 32


def test_metrics_move(daemon: Daemon) -> None:
    with daemon.client() as c:
        wait_ready(c)  # refilled once the runs before this test are over (a pool hit below)
        before = c.metrics()
        c.run(code="print(1)")
        c.run(code="raise SystemExit(3)")
        c.run(code="import time; time.sleep(5)", limits={"wall_time_s": 0.3})
        sb = c.create_sandbox(limits={"disk_mib": 4})
        during = c.metrics()
        c.delete_sandbox(sb.id)
        with SyncClient(daemon.url, token="nope") as bad, pytest.raises(Unauthorized):
            bad.run(code="")
        after = c.metrics()
    for status in ("ok", "failed", "timeout"):
        delta = metric(after, "sandboxd_runs_total", backend="nsjail", status=status) - metric(
            before, "sandboxd_runs_total", backend="nsjail", status=status
        )
        assert delta == 1, status
    count = "sandboxd_run_duration_seconds_count"
    assert metric(after, count, backend="nsjail") - metric(before, count, backend="nsjail") == 3
    assert (
        metric(during, "sandboxd_active_sandboxes")
        == metric(after, "sandboxd_active_sandboxes") + 1
    )
    rejected = "sandboxd_rejected_requests_total"
    assert (
        metric(after, rejected, code="unauthorized")
        == metric(before, rejected, code="unauthorized") + 1
    )
    hits = metric(after, "sandboxd_warm_pool", pool="nsjail/python", measure="hits")
    assert hits >= metric(before, "sandboxd_warm_pool", pool="nsjail/python", measure="hits") + 1
    assert metric(after, "sandboxd_queue_depth") == 0
    assert metric(after, "sandboxd_active_runs") == 0


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A real OTLP/HTTP endpoint on loopback that keeps what it receives."""
    received: list[bytes] = []
    port = free_port()
    loop = asyncio.new_event_loop()
    runner: list[web.AppRunner] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        r = web.AppRunner(app)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", port).start()
        runner.append(r)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    yield f"http://127.0.0.1:{port}/v1/traces", received
    asyncio.run_coroutine_threadsafe(runner[0].cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_opentelemetry_export(workdir: Path, otlp_receiver: tuple[str, list[bytes]]) -> None:
    endpoint, received = otlp_receiver
    d = Daemon(workdir, "otel", otlp_endpoint=endpoint).start()
    try:
        with SyncClient(d.url, token=d.token, traceparent=PARENT) as c:
            c.run(code="print('exported')")
        for _ in range(100):  # the batch processor flushes within ~0.2 s; bounded wait
            if any(bytes.fromhex(TRACE) in body for body in received):
                break
            time.sleep(0.1)
    finally:
        assert d.stop() == 0
    assert any(bytes.fromhex(TRACE) in body and b"sandboxd.run" in body for body in received)
