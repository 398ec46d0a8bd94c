"""The HTTP API: `make_app(settings)` builds the aiohttp application.

Middlewares, outermost first: trace id (W3C traceparent in, traceparent out), audit (one
hash-chained record per /v1 call, failures included), errors (every failure is a JSON body),
auth (bearer token to principal). Lifecycles run through `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from sandboxd.backends import registry
from sandboxd.backends.base import Backend
from sandboxd.errors import (
    BackendUnavailable,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    SandboxdError,
    Unauthorized,
)
from sandboxd.http import mcp, openapi, routes, ui
from sandboxd.http.keys import (
    BACKEND,
    CLAIM,
    CONTEXTS,
    METRICS,
    OPENAPI,
    RUNS,
    SANDBOXES,
    SETTINGS,
    SOLVES,
    STORE,
    TRACER,
)
from sandboxd.http.request import (
    AUDIT_REQUEST,
    AUDIT_RESULT,
    AUDIT_TARGET,
    ERROR_CODE,
    PRINCIPAL,
    TRACE_ID,
)
from sandboxd.observability import Metrics, Tracer, new_trace_id, parse_traceparent, trace_id_var
from sandboxd.observability import traceparent as make_traceparent
from sandboxd.service import auth, identity
from sandboxd.service.contexts import ContextManager
from sandboxd.service.runs import RunManager
from sandboxd.service.sandboxes import SandboxManager
from sandboxd.service.solves import SolveBook
from sandboxd.service.store import Store
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.http.app")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = routes.public_paths()  # {"/healthz"}: routes declared `public`


def error_response(exc: SandboxdError) -> web.Response:
    headers = {}
    if isinstance(exc, Overloaded | QuotaExceeded):
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="sandboxd"'
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = exc.allow
    return web.json_response(exc.to_wire(), status=exc.http_status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> SandboxdError:
    if exc.status == 413:
        return PayloadTooLarge(f"request body is larger than the daemon's limit: {exc.text}")
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        return MethodNotAllowed(f"method not allowed; allowed: {allow}", allow=allow)
    return SandboxdError(exc.reason, code="http_error", http_status=exc.status)


@web.middleware
async def trace_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    trace_id = parse_traceparent(request.headers.get("traceparent")) or new_trace_id()
    request[TRACE_ID] = trace_id
    token = trace_id_var.set(trace_id)
    try:
        response = await handler(request)
    finally:
        trace_id_var.reset(token)
    if not response.prepared:
        response.headers["traceparent"] = make_traceparent(trace_id)
        response.headers["X-Trace-Id"] = trace_id
    return response


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /v1 call leaves one audit record, whatever its outcome."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        return response
    finally:
        principal = request.get(PRINCIPAL)
        route = request.match_info.route
        result = dict(request.get(AUDIT_RESULT, {}))
        result["http_status"] = response.status if response is not None else 499
        if code := request.get(ERROR_CODE):
            result["error"] = code
        record = request.app[STORE].record(
            route.name or f"{request.method} {request.path}",
            tenant=principal.tenant if principal else None,
            token_id=principal.token_id if principal else None,
            request={
                "method": request.method,
                "path": request.path,
                **request.get(AUDIT_REQUEST, {}),
            },
            result=result,
            target=request.get(AUDIT_TARGET),
            trace_id=request.get(TRACE_ID),
        )
        await asyncio.shield(record)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error body; never a traceback, never an HTML page."""
    try:
        return await handler(request)
    except SandboxdError as exc:
        err = exc
    except web.HTTPException as exc:
        err = _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = SandboxdError("internal error; see the daemon's log")
    request[ERROR_CODE] = err.code
    request.app[METRICS].rejected.labels(err.code).inc()
    return error_response(err)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or ui.is_ui(request.path):
        return await handler(
            request
        )  # the UI's files hold nothing secret; its calls carry the token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    found = await request.app[STORE].call(auth.lookup, token.strip())
    if isinstance(found, str):
        raise Unauthorized(found)
    request[PRINCIPAL] = found
    return await handler(request)


def make_backends(settings: Settings) -> dict[str, Backend]:
    """The configured backends by name, each built by its type's implementation."""
    backends: dict[str, Backend] = {}
    for name, config in settings.backends.items():
        try:
            implementation = registry.implementation(config.type)
        except ImportError as exc:
            raise BackendUnavailable(f"the {config.type} backend is not available: {exc}") from None
        backend = implementation(settings, config)
        if not isinstance(backend, Backend):
            raise TypeError(f"{implementation!r} is not a Backend")
        backends[name] = backend
    return backends


async def _state(app: web.Application) -> AsyncIterator[None]:
    """Open the store; bootstrap the admin token; record runs a crash interrupted.

    From here on the daemon creates files owner-only (umask 077): the database and its WAL,
    tokens, disk images and logs hold run output and secrets. Directories that nsjail must
    traverse get their 0711 explicitly; nothing under the state dir is listable by others."""
    settings, store = app[SETTINGS], app[STORE]
    await asyncio.to_thread(settings.state_dir.mkdir, 0o711, True, True)
    os.umask(0o077)
    await store.call(auth.ensure_admin_token, settings.state_dir)
    for row in await store.call(store.mark_interrupted):
        await store.record(
            "run.interrupted",
            tenant=row.tenant,
            token_id=None,
            target=row.id,
            result={"status": "interrupted"},
            trace_id=row.trace_id,
        )
    yield
    store.close()


async def _backend(app: web.Application) -> AsyncIterator[None]:
    started: list[Backend] = []
    try:
        for backend in app[RUNS].backends.values():
            await backend.start()
            started.append(backend)
        yield
    finally:
        for backend in reversed(started):
            await backend.close()
        await app[RUNS].caches.close()


@contextlib.asynccontextmanager
async def _every(
    interval_s: float, what: str, step: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """Run `step` every `interval_s` while the block runs (a failure is logged, not fatal)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except Exception:
                log.exception("%s failed", what)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _expired(
    store: Store, action: str, gone: list[tuple[str, str]], result: dict[str, str]
) -> None:
    for target, tenant in gone:
        await store.record(action, tenant=tenant, token_id=None, target=target, result=result)


async def _sandboxes(app: web.Application) -> AsyncIterator[None]:
    manager, store, settings = app[SANDBOXES], app[STORE], app[SETTINGS]
    app[METRICS].active_sandboxes.set(await manager.start())

    async def sweep() -> None:
        sandboxes = await manager.expire_idle()
        app[METRICS].active_sandboxes.dec(len(sandboxes))
        await _expired(store, "sandbox.expire", sandboxes, {"state": "expired"})
        # after the sandboxes: a snapshot whose last fork just went is used now
        gone = await manager.snapshots.expire_idle()
        await _expired(store, "snapshot.expire", gone, {"state": "expired"})

    async with _every(settings.sandbox_sweep_s, "sandbox expiry sweep", sweep):
        yield
    await manager.close()


async def _contexts(app: web.Application) -> AsyncIterator[None]:
    """Interpreter contexts: idle ones expire (swept with the sandboxes); all stop first when
    the daemon stops, before the sandboxes' disks are unmounted."""
    manager, store, settings = app[CONTEXTS], app[STORE], app[SETTINGS]

    async def sweep() -> None:
        gone = await manager.expire_idle()
        await _expired(store, "context.expire", gone, {"status": "dead"})

    async with _every(settings.sandbox_sweep_s, "context expiry sweep", sweep):
        yield
    await manager.close()


async def _tracer(app: web.Application) -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(app[TRACER].shutdown)


def claim_state(settings: Settings) -> identity.StateClaim:
    """Lock the state dir and reserve the daemon's uid range (see `sandboxd.service.identity`)."""
    return identity.claim(
        settings.state_dir,
        uid_base=settings.uid_base,
        cgroup_root=settings.cgroup_parent,
        lock_dir=settings.lock_dir,
    )


async def _claim(app: web.Application) -> AsyncIterator[None]:
    """Held to the very end: no other daemon may take the state dir while this one cleans up."""
    yield
    app[CLAIM].release()


def make_app(
    settings: Settings,
    claim: identity.StateClaim | None = None,
    backends: dict[str, Backend] | None = None,
) -> web.Application:
    """The daemon's application; state, backend and sandboxes start and stop with it.

    `claim` is the state dir's (`claim_state`); without one, it is claimed here, first.
    `backends` by name (they must include `default_backend`): the configured ones
    (`make_backends`) unless given, as the unit tier gives `sandboxd.backends.fake`'s.
    """
    if claim is None:
        claim = claim_state(settings)
    settings = settings.with_identity(claim.identity)
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[trace_middleware, audit_middleware, error_middleware, auth_middleware],
    )
    app[CLAIM] = claim
    app[SETTINGS] = settings
    app[STORE] = Store(settings.state_dir / "sandboxd.db")
    app[METRICS] = Metrics()
    app[TRACER] = Tracer(settings.otlp_endpoint)
    if backends is None:
        backends = make_backends(settings)
    elif settings.default_backend not in backends:
        raise BackendUnavailable(f"default_backend {settings.default_backend!r} is not given")
    app[BACKEND] = backends[settings.default_backend]
    app[RUNS] = RunManager(settings, backends, app[STORE], app[METRICS], app[TRACER])
    app[SANDBOXES] = SandboxManager(settings, app[STORE])
    app[CONTEXTS] = ContextManager(settings, app[SANDBOXES], app[RUNS])
    app[SOLVES] = SolveBook(app[STORE], settings)
    app.cleanup_ctx.extend([_claim, _tracer, _state, _backend, _sandboxes, _contexts])

    for table in routes.TABLES:
        app.router.add_routes(table)
    app[OPENAPI] = openapi.build_openapi(app.router)
    app.router.add_routes(ui.make_routes(ui.load_assets()))  # not the API: not in the document
    mcp.add_routes(app)  # JSON-RPC (MCP), not in the OpenAPI document
    return app
