"""Handlers of the daemon's own routes: runs, info, OpenAPI, metrics and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sandboxd import __version__
from sandboxd.backends.base import RunControl
from sandboxd.errors import InvalidRequest, NotFound
from sandboxd.http.keys import (
    BACKEND,
    METRICS,
    OPENAPI,
    RUNS,
    SANDBOXES,
    SETTINGS,
    STORE,
    TRACE_ID,
    doc,
    model_response,
    note,
    require,
)
from sandboxd.http.sse import stream_run, wants_stream
from sandboxd.models import (
    AuditPage,
    AuditRecord,
    Health,
    Info,
    Limits,
    RunEvent,
    RunRecord,
    RunRequest,
    RunResult,
)
from sandboxd.service.audit import row_record
from sandboxd.service.policy import parse_body, request_digest

routes = web.RouteTableDef()
RUN_ID = {"run_id": "A run's id (`run_...`), as its result or `start` event gave it."}
_ = RunEvent  # streamed runs send these; `sandboxd.http.openapi` documents them


def run_summary(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "wall_time_s": result.usage.wall_time_s,
    }


@routes.get("/healthz", name="healthz")
@doc("Liveness (no token needed)", {200: ("alive", Health)}, public=True)
async def healthz(request: web.Request) -> web.Response:
    return model_response(Health())


@routes.get("/v1/info", name="info")
@doc(
    "Backend, versions, limits, capabilities, runs active and queued",
    {200: ("this daemon", Info)},
    scope="run",
)
async def info(request: web.Request) -> web.Response:
    require(request, "run")
    settings, backend, runs = request.app[SETTINGS], request.app[BACKEND], request.app[RUNS]
    return model_response(
        Info(
            version=__version__,
            backend=backend.name,
            backend_version=backend.version(),
            default_limits=Limits(),
            max_limits=Limits.model_validate(settings.max_limits.model_dump()),
            max_concurrent_runs=settings.max_concurrent_runs,
            max_queued_runs=settings.max_queued_runs,
            max_request_bytes=settings.max_request_bytes,
            active_runs=runs.active,
            queued_runs=runs.queued,
            warm_pools={
                f"{name}/{profile}": stats
                for name, b in runs.backends.items()
                for profile, stats in b.pool_stats().items()
            },
            capabilities=backend.capabilities(),
        )
    )


@routes.get("/openapi.json", name="openapi")
@doc("This document", {200: ("the OpenAPI document", "application/json")})
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


@routes.get("/metrics", name="metrics")
@doc("Prometheus metrics", {200: ("text exposition format", "text/plain")}, scope="metrics")
async def metrics(request: web.Request) -> web.Response:
    require(request, "metrics")
    registry = request.app[METRICS]
    registry.active_sandboxes.set(await request.app[SANDBOXES].count_active())
    for name, backend in request.app[RUNS].backends.items():
        for profile, stats in backend.pool_stats().items():
            for measure, value in stats.model_dump().items():
                registry.warm_pool.labels(measure, f"{name}/{profile}").set(value)
    return web.Response(
        body=generate_latest(registry.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.post("/v1/runs", name="run.create")
@doc(
    "Run code once in a fresh sandbox",
    {200: ("the run's result, whatever its status", RunResult)},
    body=RunRequest,
    errors=(400, 413, 429, 503),
    scope="run",
    sse=True,
)
async def create_run(request: web.Request) -> web.StreamResponse:
    principal = require(request, "run")
    run_request = parse_body(RunRequest, await request.read())
    note(request, req=request_digest(run_request))

    def noted(result: RunResult) -> None:
        note(request, target=result.id, result=run_summary(result))

    async def runner(control: RunControl) -> RunResult:
        return await request.app[RUNS].run(
            run_request, principal=principal, trace_id=request[TRACE_ID], control=control
        )

    if wants_stream(request):
        return await stream_run(request, runner, noted)
    result = await runner(RunControl())
    noted(result)
    return model_response(result)


@routes.delete("/v1/runs/{run_id}", name="run.cancel")
@doc(
    "Cancel a run in progress",
    {200: ("its partial result", RunResult)},
    errors=(404, 409),
    scope="run",
    params=RUN_ID,
)
async def cancel_run(request: web.Request) -> web.Response:
    """Kill a run in progress; answer with its partial result (status `cancelled`)."""
    principal = require(request, "run")
    run_id = request.match_info["run_id"]
    note(request, target=run_id)
    result = await request.app[RUNS].cancel(run_id, principal)
    note(request, result=run_summary(result))
    return model_response(result)


@routes.get("/v1/runs/{run_id}", name="run.get")
@doc("A recorded run", {200: ("the run", RunRecord)}, errors=(404,), scope="run", params=RUN_ID)
async def get_run(request: web.Request) -> web.Response:
    principal = require(request, "run")
    run_id = request.match_info["run_id"]
    note(request, target=run_id)
    row = await request.app[STORE].call(
        lambda db: db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    )
    if row is None or row["tenant"] != principal.tenant:
        raise NotFound(f"no run {run_id!r}")
    return model_response(
        RunRecord(
            id=row["id"],
            status=row["status"],
            sandbox_id=row["sandbox_id"],
            trace_id=row["trace_id"],
            created_at=datetime.fromtimestamp(row["created_at"], UTC),
            finished_at=datetime.fromtimestamp(row["finished_at"], UTC)
            if row["finished_at"]
            else None,
            result=RunResult.model_validate_json(row["result"]) if row["result"] else None,
        )
    )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # isdecimal, not isdigit: "²" is a digit that int() refuses; the length bounds int()'s work
    if not (raw.isdecimal() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


@routes.get("/v1/audit", name="audit.list")
@doc(
    "Audit records, oldest first",
    {200: ("a page of records", AuditPage)},
    errors=(400,),
    scope="audit:read",
    query={
        "after": ("Only records after this sequence number.", {"type": "integer", "minimum": 0}),
        "limit": ("Records per page.", {"type": "integer", "minimum": 1, "maximum": 1000}),
        "tenant": (
            "Admin only: one tenant's records (default: every tenant's).",
            {"type": "string"},
        ),
    },
)
async def audit(request: web.Request) -> web.Response:
    """The caller's tenant's audit records (every tenant's for admin), oldest first."""
    principal = require(request, "audit:read")
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    tenant: str | None = principal.tenant
    if principal.can("admin"):
        tenant = request.query.get("tenant")
    query, args = "SELECT * FROM audit WHERE seq > ?", list[int | str]([after])
    if tenant is not None:
        query += " AND tenant = ?"
        args.append(tenant)
    sql = query + " ORDER BY seq LIMIT ?"
    rows = await request.app[STORE].call(lambda db: db.execute(sql, (*args, limit)).fetchall())
    records = [AuditRecord.model_validate(row_record(r)) for r in rows]
    next_after = records[-1].seq if len(records) == limit else None
    return web.Response(
        text=AuditPage(records=records, next_after=next_after).model_dump_json(),
        content_type="application/json",
    )
