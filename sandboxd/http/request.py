"""What a handler does with its request, whatever the resource: who is calling (`require`),
what the audit record of the request should say (`note`), a wire model as the JSON answer,
and the route's declared promise (`doc`), read by `sandboxd.http.openapi` and the auth
middleware. Imports nothing of the service layer but the principal, so that the run stream
(`sandboxd.http.sse`) and the OpenAPI generator stand below the typed app state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from sandboxd.errors import Forbidden, Unauthorized
from sandboxd.service.auth import Principal

# Per-request keys (set by middlewares and handlers, read by the audit middleware).
PRINCIPAL = web.RequestKey("sandboxd.principal", Principal)
TRACE_ID = web.RequestKey("sandboxd.trace_id", str)
AUDIT_REQUEST = web.RequestKey("sandboxd.audit_request", dict[str, Any])
AUDIT_RESULT = web.RequestKey("sandboxd.audit_result", dict[str, Any])
AUDIT_TARGET = web.RequestKey("sandboxd.audit_target", str)
ERROR_CODE = web.RequestKey("sandboxd.error_code", str)


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


Content = type[BaseModel] | str | None
"""What a body holds: a wire model (JSON), a media type (raw bytes or text), or nothing."""


@dataclass(frozen=True)
class RouteDoc:
    """What a route promises, declared beside its handler and read by `sandboxd.http.openapi` (and
    by the auth middleware: `public`), so that the document cannot drift from the routes.

    `responses` maps each success status to (description, content); `errors` lists the error
    statuses the handler itself can answer (401 and, with a `scope`, 403 are added for every
    route that is not `public`)."""

    summary: str
    responses: dict[int, tuple[str, Content]]
    errors: tuple[int, ...] = ()
    scope: str | None = None
    public: bool = False
    body: Content = None
    sse: bool | type[BaseModel] = False  # True: RunEvents; a model: events of that model
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


DOC_ATTR = "__sandboxd_route__"
F = TypeVar("F", bound=Callable[..., Any])


def route_doc(handler: object) -> RouteDoc | None:
    found = getattr(handler, DOC_ATTR, None)
    return found if isinstance(found, RouteDoc) else None


def doc(summary: str, responses: dict[int, tuple[str, Content]], **more: Any) -> Callable[[F], F]:
    """Attach a `RouteDoc` to a handler (put it below the `@routes.get(...)` line)."""
    meta = RouteDoc(summary, responses, **more)

    def attach(handler: F) -> F:
        setattr(handler, DOC_ATTR, meta)
        return handler

    return attach
