"""Handlers of the daemon's own routes: runs, info, OpenAPI, metrics and the audit trail."""

from __future__ import annotations

import asyncio
import re
from typing import get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sandboxd import __version__
from sandboxd.backends.base import RunControl
from sandboxd.errors import Conflict, InvalidRequest
from sandboxd.http import sse
from sandboxd.http.keys import BACKEND, METRICS, OPENAPI, RUNS, SANDBOXES, SETTINGS, STORE
from sandboxd.http.request import TRACE_ID, doc, model_response, note, require
from sandboxd.http.sse import EVENT_STREAM, answer_run, run_doc
from sandboxd.models import (
    BACKEND_NAME,
    MAX_FILES,
    AuditPage,
    Health,
    Info,
    Language,
    Limits,
    RunEvent,
    RunList,
    RunRecord,
    RunRequest,
    RunResult,
    RunStatus,
)
from sandboxd.service.auth import readable_tenant
from sandboxd.service.policy import parse_body
from sandboxd.service.runs import PreparedRun, run_summary

routes = web.RouteTableDef()
RUN_ID_RE = re.compile(r"^run_[0-9a-f]{16}$")
TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
RUN_ID = {"run_id": "A run's id (`run_...`), as its result or `start` event gave it."}
_ = RunEvent  # streamed runs send these; `sandboxd.http.openapi` documents them


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
            backends=list(runs.backends),
            backend_version=backend.version(),
            default_limits=Limits(),
            max_limits=Limits.model_validate(settings.max_limits.model_dump()),
            max_concurrent_runs=settings.max_concurrent_runs,
            max_queued_runs=settings.max_queued_runs,
            max_request_bytes=settings.max_request_bytes,
            max_files_per_request=MAX_FILES,
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
@run_doc("Run code once in a fresh sandbox", scope="run")
async def create_run(request: web.Request) -> web.StreamResponse:
    principal = require(request, "run")
    prepared = PreparedRun.of(parse_body(RunRequest, await request.read()))
    note(request, req=prepared.digest)

    def noted(result: RunResult) -> None:
        note(request, target=result.id, result=run_summary(result))

    async def runner(control: RunControl) -> RunResult:
        return await request.app[RUNS].run(
            prepared, principal=principal, trace_id=request[TRACE_ID], control=control
        )

    return await answer_run(request, runner, noted, request[TRACE_ID])


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


RUN_STATUSES = ("running", "interrupted", *get_args(RunStatus))


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", field=name)
    return raw


@routes.get("/v1/runs", name="run.list")
@doc(
    "Recorded runs, newest first",
    {200: ("a page of runs", RunList)},
    errors=(400,),
    scope="run",
    query={
        "status": ("Only runs of this status.", {"type": "string", "enum": list(RUN_STATUSES)}),
        "language": ("Only runs of this language.", {"type": "string"}),
        "backend": ("Only runs on this backend (by name).", {"type": "string"}),
        "trace_id": (
            "Only runs of this trace (a coder solve's runs share its trace id).",
            {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        ),
        "tenant": ("Admin only: one tenant's runs (default: every tenant's).", {"type": "string"}),
        "after": ("The `next_after` of the previous page.", {"type": "string"}),
        "limit": ("Runs per page.", {"type": "integer", "minimum": 1, "maximum": 500}),
    },
)
async def list_runs(request: web.Request) -> web.Response:
    """The caller's tenant's runs (every tenant's for admin), newest first, without output."""
    principal = require(request, "run")
    limit = int_param(request, "limit", 50, 1, 500)
    after = request.query.get("after")
    if after is not None and not RUN_ID_RE.match(after):
        raise InvalidRequest("after must be a run id (run_ and 16 hex digits)", field="after")
    backend = request.query.get("backend")
    if backend is not None and not re.match(BACKEND_NAME, backend):
        raise InvalidRequest("backend is not a backend name", field="backend")
    trace_id = request.query.get("trace_id")
    if trace_id is not None and not TRACE_ID_RE.match(trace_id):
        raise InvalidRequest("trace_id must be 32 lowercase hex digits", field="trace_id")
    page = await request.app[RUNS].page(
        readable_tenant(principal, request.query.get("tenant")),
        after,
        limit,
        status=_choice(request, "status", RUN_STATUSES),
        language=_choice(request, "language", get_args(Language)),
        backend=backend,
        trace_id=trace_id,
    )
    return model_response(page)


@routes.get("/v1/runs/{run_id}", name="run.get")
@doc("A recorded run", {200: ("the run", RunRecord)}, errors=(404,), scope="run", params=RUN_ID)
async def get_run(request: web.Request) -> web.Response:
    principal = require(request, "run")
    run_id = request.match_info["run_id"]
    note(request, target=run_id)
    return model_response(await request.app[RUNS].get(run_id, principal))


@routes.get("/v1/runs/{run_id}/events", name="run.follow")
@doc(
    "Follow a run: its events as Server-Sent Events, live while it runs",
    {200: ("`start`, `stdout`/`stderr`, then `exit` or `error` (see RunEvent)", EVENT_STREAM)},
    errors=(404,),
    scope="run",
    params=RUN_ID,
)
async def follow_run(request: web.Request) -> web.StreamResponse:
    """The same events as the stream of the request that started the run, from anyone of its
    tenant (admin: any run): what it printed so far, then as it comes, then its result. A
    finished run answers its recorded output and result at once. Leaving cancels nothing."""
    principal = require(request, "run")
    run_id = request.match_info["run_id"]
    note(request, target=run_id)
    runs = request.app[RUNS]
    if (live := runs.follow(run_id, principal)) is not None:
        output, done = live
        earlier, queue = output.follow()
        try:
            return await sse.follow_run(request, run_id, earlier, queue, done, request[TRACE_ID])
        finally:
            output.leave(queue)
    record = await runs.get(run_id, principal)  # 404 for another tenant's or an unknown run
    ended: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    ended.put_nowait(None)
    result = record.result
    printed = (
        [("stdout", result.stdout.encode()), ("stderr", result.stderr.encode())] if result else []
    )
    finished: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
    if result is not None:
        finished.set_result(result)
    else:
        finished.set_exception(Conflict(f"run {run_id} ended without a result ({record.status})"))
    return await sse.follow_run(request, run_id, printed, ended, finished, request[TRACE_ID])


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
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
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, 1000)
    tenant = readable_tenant(principal, request.query.get("tenant"))
    return model_response(
        await request.app[STORE].audit_page(after=after, tenant=tenant, limit=limit)
    )
