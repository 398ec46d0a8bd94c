"""Typed application state shared by the daemon's handlers, and per-request helpers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sandboxd.auth import Principal
from sandboxd.backends.base import Backend
from sandboxd.errors import Forbidden, Unauthorized
from sandboxd.identity import StateClaim
from sandboxd.observability import Metrics, Tracer
from sandboxd.runs import RunManager
from sandboxd.sandboxes import SandboxManager
from sandboxd.settings import Settings
from sandboxd.store import Store

SETTINGS = web.AppKey("settings", Settings)
BACKEND = web.AppKey("backend", Backend)
STORE = web.AppKey("store", Store)
RUNS = web.AppKey("runs", RunManager)
SANDBOXES = web.AppKey("sandboxes", SandboxManager)
METRICS = web.AppKey("metrics", Metrics)
TRACER = web.AppKey("tracer", Tracer)
CLAIM = web.AppKey("claim", StateClaim)

# Per-request keys (set by middlewares and handlers, read by the audit middleware).
PRINCIPAL = "sandboxd.principal"
TRACE_ID = "sandboxd.trace_id"
AUDIT_REQUEST = "sandboxd.audit_request"
AUDIT_RESULT = "sandboxd.audit_result"
AUDIT_TARGET = "sandboxd.audit_target"
ERROR_CODE = "sandboxd.error_code"


def require(request: web.Request, scope: str) -> Principal:
    """The caller, who must hold `scope` (or admin)."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise Unauthorized("missing bearer token")
    if not principal.can(scope):
        raise Forbidden(f"this token lacks the {scope!r} scope")
    return principal


def note(
    request: web.Request,
    *,
    target: str | None = None,
    req: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """What the audit record of this request should say beyond method, path and status."""
    if target is not None:
        request[AUDIT_TARGET] = target
    if req is not None:
        request[AUDIT_REQUEST] = req
    if result is not None:
        request[AUDIT_RESULT] = result


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )
