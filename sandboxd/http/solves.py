"""Handlers of `/v1/solves`: coder reports each solve here (`coder.report`) and the Studio
reads them. Scope `sandboxes`: a solve is work coder does in a sandbox, with the same token."""

from __future__ import annotations

import re

from aiohttp import web

from sandboxd.errors import InvalidRequest
from sandboxd.http.keys import SOLVES
from sandboxd.http.request import doc, model_response, note, require
from sandboxd.http.runs import int_param
from sandboxd.models import (
    SOLVE_ID,
    Solve,
    SolveAppended,
    SolveCreate,
    SolveEvents,
    SolveList,
    SolveSummary,
)
from sandboxd.service.auth import readable_tenant
from sandboxd.service.policy import parse_body

SCOPE = "sandboxes"
routes = web.RouteTableDef()
SOLVE = {"solve_id": "A solve's id (`slv_...`)."}


def _solve_id(request: web.Request) -> str:
    solve_id = request.match_info["solve_id"]
    note(request, target=solve_id)
    return solve_id


@routes.post("/v1/solves", name="solve.create")
@doc(
    "Start recording a coder solve",
    {201: ("the solve", SolveSummary)},
    body=SolveCreate,
    errors=(400, 413),
    scope=SCOPE,
)
async def create(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    spec = parse_body(SolveCreate, await request.read())
    note(request, req={"repo": spec.repo, "trace_id": spec.trace_id})
    solve = await request.app[SOLVES].create(principal, spec)
    note(request, target=solve.id)
    return model_response(solve, status=201)


@routes.post("/v1/solves/{solve_id}/events", name="solve.events")
@doc(
    "Append events to a solve (all of them or none)",
    {200: ("how many events it holds", SolveAppended)},
    body=SolveEvents,
    errors=(400, 404, 409, 413),
    scope=SCOPE,
    params=SOLVE,
)
async def append(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    solve_id = _solve_id(request)
    body = parse_body(SolveEvents, await request.read())
    note(request, req={"kinds": [e.kind for e in body.events]})
    count = await request.app[SOLVES].append(principal, solve_id, body)
    return model_response(SolveAppended(events=count))


@routes.get("/v1/solves", name="solve.list")
@doc(
    "Recorded solves, newest first",
    {200: ("a page of solves", SolveList)},
    errors=(400,),
    scope=SCOPE,
    query={
        "after": ("The `next_after` of the previous page.", {"type": "string"}),
        "limit": ("Solves per page.", {"type": "integer", "minimum": 1, "maximum": 200}),
        "tenant": (
            "Admin only: one tenant's solves (default: every tenant's).",
            {"type": "string"},
        ),
    },
)
async def list_solves(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    limit = int_param(request, "limit", 50, 1, 200)
    after = request.query.get("after")
    if after is not None and not re.match(SOLVE_ID, after):
        raise InvalidRequest("after must be a solve id (slv_ and 16 hex digits)", field="after")
    tenant = readable_tenant(principal, request.query.get("tenant"))
    return model_response(await request.app[SOLVES].list_for(principal, tenant, after, limit))


@routes.get("/v1/solves/{solve_id}", name="solve.get")
@doc(
    "A solve and its timeline",
    {200: ("the solve", Solve)},
    errors=(404,),
    scope=SCOPE,
    params=SOLVE,
)
async def get(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    return model_response(await request.app[SOLVES].get(principal, _solve_id(request)))
