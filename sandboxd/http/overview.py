"""Handlers the Studio's overview and audit pages read: the daemon's figures (`/v1/stats`)
and the audit chain's check (`/v1/audit/verify`, the same as `sandboxd audit verify`)."""

from __future__ import annotations

from aiohttp import web

from sandboxd.http.keys import METRICS, RUNS, STORE
from sandboxd.http.request import doc, model_response, require
from sandboxd.models import AuditVerdict, Stats
from sandboxd.service.stats import stats

routes = web.RouteTableDef()


@routes.get("/v1/stats", name="stats")
@doc(
    "Runs active and queued, warm pools, the last hour of runs, requests refused",
    {200: ("the figures", Stats)},
    scope="metrics",
)
async def get_stats(request: web.Request) -> web.Response:
    """What `/metrics` exports, as JSON, plus the last hour of runs from the store."""
    require(request, "metrics")
    return model_response(await stats(request.app[RUNS], request.app[METRICS]))


@routes.get("/v1/audit/verify", name="audit.verify")
@doc(
    "Recompute the audit chain (as `sandboxd audit verify` does)",
    {200: ("whether the chain is intact, and where not", AuditVerdict)},
    scope="audit:read",
)
async def verify_audit(request: web.Request) -> web.Response:
    """The whole trail is checked (a chain cannot be checked one tenant at a time); the answer
    says only whether it holds, how many records it has and the first one found wrong. Checks
    run one at a time, and one answers for 5 s."""
    require(request, "audit:read")
    store = request.app[STORE]
    verdict = await store.verify_audit()
    return model_response(
        AuditVerdict(
            ok=verdict.ok, records=verdict.records, problem=verdict.problem, seq=verdict.seq
        )
    )
