"""The endpoints the Studio reads: the run list, the overview's figures, the audit check over
HTTP, and coder's solves (tenant-scoped, validated, capped, all-or-nothing)."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon


@pytest.fixture(scope="module")
def studio(workdir: Path) -> Iterator[Daemon]:
    d = Daemon(workdir, "studio-api").start()
    yield d
    assert d.stop() == 0, d.log.read_text()[-3000:]


def call(
    d: Daemon, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = d.request(path, data=data, method=method, token=token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        assert err.headers["Content-Type"].startswith("application/json"), raw[:200]  # noqa: PT017
        return err.code, json.loads(raw)


def test_run_list_is_newest_first_paged_filtered_and_tenant_scoped(studio: Daemon) -> None:
    alice = studio.make_token("alice", "run")
    bob = studio.make_token("bob", "run")
    ids = []
    for code in ("print(1)", "import sys; sys.exit(3)", "print(3)"):
        status, result = call(studio, "POST", "/v1/runs", {"code": code}, token=alice)
        assert status == 200
        ids.append(result["id"])
    call(studio, "POST", "/v1/runs", {"language": "bash", "code": "echo bob"}, token=bob)

    status, page = call(studio, "GET", "/v1/runs?limit=2", token=alice)
    assert status == 200
    assert [r["id"] for r in page["runs"]] == [ids[2], ids[1]]
    assert page["runs"][1]["status"] == "failed" and page["runs"][1]["exit_code"] == 3
    assert page["runs"][0]["language"] == "python" and page["runs"][0]["backend"] == "nsjail"
    status, rest = call(studio, "GET", f"/v1/runs?limit=2&after={page['next_after']}", token=alice)
    assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_after"] is None
    _, failed = call(studio, "GET", "/v1/runs?status=failed", token=alice)
    assert [r["id"] for r in failed["runs"]] == [ids[1]]
    _, bash = call(studio, "GET", "/v1/runs?language=bash", token=alice)
    assert bash["runs"] == []  # bob's bash run is not alice's
    _, everyone = call(studio, "GET", "/v1/runs?language=bash&limit=500")  # admin: all tenants
    assert [r["tenant"] for r in everyone["runs"]] == ["bob"]
    _, only_bob = call(studio, "GET", "/v1/runs?tenant=bob")
    assert {r["tenant"] for r in only_bob["runs"]} == {"bob"}
    trace = page["runs"][0]["trace_id"]
    _, traced = call(studio, "GET", f"/v1/runs?trace_id={trace}", token=alice)
    assert [r["id"] for r in traced["runs"]] == [ids[2]]
    # admin reads any tenant's run by id; another tenant does not find it
    assert call(studio, "GET", f"/v1/runs/{ids[0]}")[0] == 200
    assert call(studio, "GET", f"/v1/runs/{ids[0]}", token=bob)[0] == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=exploded", "status"),
        ("language=cobol", "language"),
        ("backend=NOT%20A%20NAME", "backend"),
        ("after=run_nothex", "after"),
        ("trace_id=XYZ", "trace_id"),
        ("limit=0", "limit"),
        ("limit=9999", "limit"),
    ],
)
def test_run_list_refuses_bad_queries(studio: Daemon, query: str, field: str) -> None:
    status, body = call(studio, "GET", f"/v1/runs?{query}")
    assert status == 400
    assert body["error"]["code"] == "invalid_request" and body["error"]["field"] == field


def test_stats_counts_the_last_hour(studio: Daemon) -> None:
    call(studio, "POST", "/v1/runs", {"code": "print('stats')"})
    call(studio, "POST", "/v1/runs", {"code": "", "langauge": "x"})  # refused: unknown_field
    status, stats = call(studio, "GET", "/v1/stats")
    assert status == 200
    assert stats["runs_last_hour"].get("ok", 0) >= 1
    assert sum(stats["runs_per_minute"]) == sum(stats["runs_last_hour"].values())
    assert len(stats["runs_per_minute"]) == 60
    assert 0 < stats["latency_p50_s"] <= stats["latency_p90_s"]
    assert stats["rejected"]["unknown_field"] >= 1
    assert "nsjail/python" in stats["warm_pools"]
    run_only = studio.make_token("carol", "run")
    assert call(studio, "GET", "/v1/stats", token=run_only)[0] == 403


def test_audit_verify_over_http_matches_the_cli(workdir: Path) -> None:
    d = Daemon(workdir, "studio-verify").start()
    try:
        call(d, "POST", "/v1/runs", {"code": "print(1)"})
        status, verdict = call(d, "GET", "/v1/audit/verify")
        assert status == 200 and verdict["ok"] is True and verdict["records"] >= 1
        run_only = d.make_token("t", "run")
        assert call(d, "GET", "/v1/audit/verify", token=run_only)[0] == 403
        db = sqlite3.connect(d.state_dir / "sandboxd.db")
        db.execute("UPDATE audit SET tenant = 'mallory' WHERE seq = 1")
        db.commit()
        db.close()
        deadline = time.monotonic() + 15  # a verdict answers for 5 s (checks cost O(records))
        while (verdict := call(d, "GET", "/v1/audit/verify")[1])["ok"]:
            assert time.monotonic() < deadline, "the edited record was never found"
            time.sleep(0.5)
        assert verdict["ok"] is False and verdict["seq"] == 1
        cli = d.cli("audit", "verify")
        assert cli.returncode == 1 and "record 1" in cli.stderr
    finally:
        assert d.stop() == 0


SPEC = {
    "task": "Make the failing tests pass.",
    "repo": "calc",
    "test_command": "pytest -q",
    "models": {"writer": "m-writer", "reviewer": "m-reviewer"},
    "budgets": {"max_iterations": 8},
    "trace_id": "ab" * 16,
}


def test_solves_record_events_in_order_per_tenant(studio: Daemon) -> None:
    alice = studio.make_token("alice", "sandboxes")
    bob = studio.make_token("bob", "sandboxes")
    status, solve = call(studio, "POST", "/v1/solves", SPEC, token=alice)
    assert status == 201 and solve["status"] == "running" and solve["id"].startswith("slv_")
    sid = solve["id"]
    events = [
        {"kind": "tests", "round": 0, "passed": False, "failing": ["t::a"], "summary": "1 failed"},
        {
            "kind": "model",
            "round": 1,
            "role": "writer",
            "model": "m-writer",
            "usage": {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5},
        },
        {"kind": "edits", "round": 1, "files": ["calc.py"], "applied": 1},
    ]
    status, appended = call(studio, "POST", f"/v1/solves/{sid}/events", {"events": events}, alice)
    assert status == 200 and appended == {"events": 3}
    # another tenant neither sees nor extends it
    assert call(studio, "GET", f"/v1/solves/{sid}", token=bob)[0] == 404
    assert call(studio, "POST", f"/v1/solves/{sid}/events", {"events": events}, bob)[0] == 404
    # an admin reads it (below) but writes no other tenant's timeline
    assert call(studio, "POST", f"/v1/solves/{sid}/events", {"events": events})[0] == 404
    end = [
        {"kind": "review", "round": 1, "verdict": "APPROVE", "points": []},
        {"kind": "end", "status": "fixed", "rounds": 1, "patch": "--- a\n+++ b\n"},
    ]
    assert call(studio, "POST", f"/v1/solves/{sid}/events", {"events": end}, alice)[0] == 200
    status, got = call(studio, "GET", f"/v1/solves/{sid}", token=alice)
    assert status == 200 and got["status"] == "fixed" and got["events"] == 5
    assert [e["event"]["kind"] for e in got["timeline"]] == [
        "tests",
        "model",
        "edits",
        "review",
        "end",
    ]
    assert [e["seq"] for e in got["timeline"]] == [1, 2, 3, 4, 5]
    status, after_end = call(studio, "POST", f"/v1/solves/{sid}/events", {"events": end}, alice)
    assert status == 409 and after_end["error"]["code"] == "conflict"
    _, mine = call(studio, "GET", "/v1/solves", token=alice)
    assert sid in [s["id"] for s in mine["solves"]]
    _, theirs = call(studio, "GET", "/v1/solves", token=bob)
    assert sid not in [s["id"] for s in theirs["solves"]]
    run_only = studio.make_token("alice", "run")
    assert call(studio, "GET", "/v1/solves", token=run_only)[0] == 403


@pytest.mark.parametrize(
    ("events", "code", "field"),
    [
        ([{"kind": "explode"}], "invalid_request", "events[0]"),
        ([{"kind": "review", "round": 1, "verdict": "MAYBE"}], "invalid_request", None),
        ([{"kind": "tests", "round": -1, "passed": True}], "invalid_request", None),
        ([{"kind": "note", "text": "x", "extra": 1}], "unknown_field", None),
        ([{"kind": "end", "status": "fixed"}, {"kind": "note", "text": "late"}], None, "events"),
        ([], "invalid_request", "events"),
    ],
)
def test_bad_solve_events_are_refused_and_nothing_is_appended(
    studio: Daemon, events: list[Any], code: str | None, field: str | None
) -> None:
    _, solve = call(studio, "POST", "/v1/solves", SPEC)
    status, body = call(studio, "POST", f"/v1/solves/{solve['id']}/events", {"events": events})
    assert status == 400, body
    if code:
        assert body["error"]["code"] == code
    if field:
        assert (body["error"]["field"] or "").startswith(field)
    assert call(studio, "GET", f"/v1/solves/{solve['id']}")[1]["events"] == 0


def test_solve_size_caps_refuse_whole_batches(studio: Daemon) -> None:
    _, solve = call(studio, "POST", "/v1/solves", SPEC)
    note = {"kind": "note", "text": "x" * 60000}
    ok = 0
    for _ in range(400):  # 16 MiB of events at most: the cap is met within this many batches
        status, body = call(
            studio, "POST", f"/v1/solves/{solve['id']}/events", {"events": [note] * 10}
        )
        if status != 200:
            break
        ok += 1
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert call(studio, "GET", f"/v1/solves/{solve['id']}")[1]["events"] == ok * 10


@pytest.mark.parametrize(
    "body",
    [
        {**SPEC, "trace_id": "not-hex"},
        {**SPEC, "repo": "x" * 300},
        {**SPEC, "surprise": True},
        {"repo": "r"},
    ],
)
def test_bad_solve_creation_is_refused(studio: Daemon, body: dict[str, Any]) -> None:
    status, answer = call(studio, "POST", "/v1/solves", body)
    assert status == 400 and answer["error"]["code"] in ("invalid_request", "unknown_field")


def test_unknown_solve_is_404(studio: Daemon) -> None:
    assert call(studio, "GET", "/v1/solves/slv_0000000000000000")[0] == 404
    assert call(studio, "GET", "/v1/solves?after=nope")[0] == 400


def sse_events(resp: Any) -> Iterator[dict[str, Any]]:
    """The events of an SSE answer, as they arrive."""
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_follow_a_run_live_from_another_request(studio: Daemon) -> None:
    code = "import time\nprint('one', flush=True)\ntime.sleep(4)\nprint('two', flush=True)\n"
    other = studio.make_token("mallory", "run")  # before the run: the CLI takes a while
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(
            call, studio, "POST", "/v1/runs", {"code": code, "limits": {"wall_time_s": 20}}
        )
        run_id = None
        deadline = time.monotonic() + 20
        while run_id is None and time.monotonic() < deadline:
            _, page = call(studio, "GET", "/v1/runs?status=running")
            run_id = page["runs"][0]["id"] if page["runs"] else None
            time.sleep(0.05)
        assert run_id is not None
        assert call(studio, "GET", f"/v1/runs/{run_id}/events", token=other)[0] == 404
        seen: list[dict[str, Any]] = []
        with urllib.request.urlopen(
            studio.request(f"/v1/runs/{run_id}/events"), timeout=30
        ) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            for event in sse_events(resp):
                if event["event"] == "stdout" and "one" in event["data"]:
                    assert not started.done()  # live: the run is still going
                seen.append(event)
        status, result = started.result(timeout=30)
    assert status == 200 and result["status"] == "ok"
    assert seen[0] == {"event": "start", "run_id": run_id}
    printed = "".join(e["data"] for e in seen if e["event"] == "stdout")
    assert printed == "one\ntwo\n" == result["stdout"]
    assert seen[-1]["event"] == "exit" and seen[-1]["result"]["id"] == run_id
    # a finished run answers its recorded output at once
    with urllib.request.urlopen(studio.request(f"/v1/runs/{run_id}/events"), timeout=30) as resp:
        again = list(sse_events(resp))
    assert [e["event"] for e in again] == ["start", "stdout", "exit"]
    assert call(studio, "GET", "/v1/runs/run_0000000000000000/events")[0] == 404


def test_a_follower_leaving_does_not_cancel_the_run(studio: Daemon) -> None:
    code = "import time\nprint('x', flush=True)\ntime.sleep(1)\nprint('done')\n"
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(call, studio, "POST", "/v1/runs", {"code": code})
        deadline = time.monotonic() + 20
        run_id = None
        while run_id is None and time.monotonic() < deadline:
            _, page = call(studio, "GET", "/v1/runs?status=running")
            run_id = page["runs"][0]["id"] if page["runs"] else None
            time.sleep(0.05)
        with urllib.request.urlopen(
            studio.request(f"/v1/runs/{run_id}/events"), timeout=30
        ) as resp:
            assert next(sse_events(resp))["event"] == "start"
        status, result = started.result(timeout=30)
    assert status == 200 and result["status"] == "ok" and result["stdout"] == "x\ndone\n"


def test_a_tenant_keeps_its_newest_solves(workdir: Path) -> None:
    """Past `max_solves`, a new solve makes its tenant's oldest ended one go; when all it
    keeps are running, the new one is refused (429) and nothing is lost."""
    d = Daemon(workdir, "solvecap", tenants={"few": {"max_solves": 2}}).start()
    try:
        token = d.make_token("few", "sandboxes")
        first = call(d, "POST", "/v1/solves", SPEC, token=token)[1]["id"]
        second = call(d, "POST", "/v1/solves", SPEC, token=token)[1]["id"]
        end = {"events": [{"kind": "end", "status": "fixed", "rounds": 1, "patch": ""}]}
        assert call(d, "POST", f"/v1/solves/{first}/events", end, token)[0] == 200
        third = call(d, "POST", "/v1/solves", SPEC, token=token)[1]["id"]
        assert call(d, "GET", f"/v1/solves/{first}", token=token)[0] == 404  # the ended one
        assert call(d, "GET", f"/v1/solves/{second}", token=token)[0] == 200
        status, err = call(d, "POST", "/v1/solves", SPEC, token=token)
        assert (status, err["error"]["field"]) == (429, "max_solves")
        listed = call(d, "GET", "/v1/solves", token=token)[1]["solves"]
        assert {s["id"] for s in listed} == {second, third}
    finally:
        assert d.stop() == 0
