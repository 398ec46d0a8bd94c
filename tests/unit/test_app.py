"""The HTTP app in-process over the fake backend: runs, error bodies, auth, audit, SSE, cancel."""

from __future__ import annotations

import asyncio
import json

from sandboxd.models import AuditPage, RunEvent, RunResult
from tests.unit.conftest import App


async def post_run(app: App, body: object, token: str | None = None) -> tuple[int, dict]:
    resp = await app.http.post("/v1/runs", json=body, headers=app.headers(token))
    return resp.status, await resp.json()


async def test_a_run_goes_through_the_fake(app: App) -> None:
    status, body = await post_run(app, {"code": "print('hi')\nexit 3", "stdin": "x"})
    assert status == 200
    result = RunResult.model_validate(body)
    assert (result.status, result.exit_code, result.stdout) == ("failed", 3, "hi\n")
    assert result.backend == "fake"
    assert app.backend.started
    assert [c.run_id for c in app.backend.calls] == [result.id]
    assert app.backend.calls[0].request.stdin == "x"


async def test_limits_are_capped_before_the_backend_sees_them(app: App) -> None:
    status, body = await post_run(app, {"code": "sleep 0.01", "limits": {"wall_time_s": 1}})
    assert status == 200, body
    assert body["status"] == "ok"
    status, body = await post_run(app, {"code": "", "limits": {"wall_time_s": 10**9}})
    assert status == 400, body
    assert body["error"]["field"] == "limits.wall_time_s"


async def test_bad_input_is_a_json_error_body(app: App) -> None:
    status, body = await post_run(app, {"code": "x", "bogus": 1})
    assert status == 400
    assert body == {
        "error": {"code": "unknown_field", "message": "unknown field 'bogus'", "field": "bogus"}
    }
    resp = await app.http.post("/v1/runs", data=b"{not json", headers=app.headers())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"
    assert app.backend.calls == []


async def test_a_refusing_backend_is_an_error_body_not_a_500(app: App) -> None:
    status, body = await post_run(app, {"code": "raise backend_unavailable"})
    assert status == 503
    assert body["error"]["code"] == "backend_unavailable"


async def test_auth_401_without_token_403_without_scope(app: App) -> None:
    resp = await app.http.post("/v1/runs", json={"code": ""})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["code"] == "unauthorized"
    reader = await app.token_with("audit:read")
    status, body = await post_run(app, {"code": ""}, token=reader)
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    runner = await app.token_with("run")
    status, body = await post_run(app, {"code": "print(1)"}, token=runner)
    assert (status, body["stdout"]) == (200, "1\n")
    assert app.backend.calls[-1].request.code == "print(1)"


async def test_every_call_leaves_a_chained_audit_record(app: App) -> None:
    await post_run(app, {"code": "exit 0"})
    await post_run(app, {"code": "x", "bogus": 1})
    await app.http.post("/v1/runs", json={"code": ""})  # 401: recorded too
    resp = await app.http.get("/v1/audit", headers=app.headers())
    page = AuditPage.model_validate(await resp.json())
    actions = [(r.action, r.result.get("http_status")) for r in page.records]
    assert actions[-3:] == [("run.create", 200), ("run.create", 400), ("run.create", 401)]
    for before, after in zip(page.records, page.records[1:], strict=False):
        assert after.prev_hash == before.hash
        assert after.seq == before.seq + 1


async def read_events(resp: object) -> list[RunEvent]:
    events = []
    async for raw in resp.content:  # type: ignore[attr-defined]
        line = raw.decode().strip()
        if line.startswith("data:"):
            events.append(RunEvent.model_validate(json.loads(line[5:])))
    return events


async def test_sse_streams_output_then_the_result(app: App) -> None:
    headers = {**app.headers(), "Accept": "text/event-stream"}
    code = "print('one')\nstderr('two')\nprint('three')"
    resp = await app.http.post("/v1/runs", json={"code": code}, headers=headers)
    assert resp.status == 200
    events = await read_events(resp)
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit"
    assert "".join(e.data or "" for e in events if e.event == "stdout") == "one\nthree\n"
    assert [e.data for e in events if e.event == "stderr"] == ["two\n"]
    assert events[-1].result is not None and events[-1].result.status == "ok"


async def test_cancel_through_the_fake(app: App) -> None:
    headers = {**app.headers(), "Accept": "text/event-stream"}
    body = {"code": "print('started')\nsleep 30", "limits": {"wall_time_s": 60}}
    resp = await app.http.post("/v1/runs", json=body, headers=headers)
    while not (line := (await resp.content.readline()).decode()).startswith("data:"):
        pass  # the `event:` line
    run_id = json.loads(line[5:])["run_id"]
    cancel = await asyncio.wait_for(
        app.http.delete(f"/v1/runs/{run_id}", headers=app.headers()), 10
    )
    assert cancel.status == 200
    result = RunResult.model_validate(await cancel.json())
    assert result.status == "cancelled"
    assert result.stdout == "started\n"
    rest = await read_events(resp)
    assert rest[-1].event == "exit" and rest[-1].result.status == "cancelled"  # type: ignore[union-attr]


async def test_wall_time_gives_timeout(app: App) -> None:
    status, body = await post_run(app, {"code": "sleep 5", "limits": {"wall_time_s": 0.05}})
    assert (status, body["status"]) == (200, "timeout")
    assert "wall time" in body["message"]


async def test_info_reports_the_request_caps(app: App) -> None:
    """What a client needs to batch an upload: bytes and files per request."""
    resp = await app.http.get("/v1/info", headers=app.headers())
    info = await resp.json()
    assert (info["max_request_bytes"], info["max_files_per_request"]) == (32 * 1024 * 1024, 1000)
    assert info["backends"] == ["nsjail"]  # the fake, under the name the app gave it
