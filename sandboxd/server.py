"""The HTTP API: `make_app(settings)` builds the aiohttp application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel

from sandboxd import __version__
from sandboxd.backends.base import Backend
from sandboxd.backends.nsjail import NsjailBackend
from sandboxd.errors import (
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    SandboxdError,
)
from sandboxd.models import Health, Info, Limits, RunRequest
from sandboxd.openapi import build_openapi
from sandboxd.policy import parse_body
from sandboxd.runs import RunManager
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.server")

SETTINGS = web.AppKey("settings", Settings)
BACKEND = web.AppKey("backend", Backend)
RUNS = web.AppKey("runs", RunManager)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def error_response(exc: SandboxdError) -> web.Response:
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_s)
    return web.json_response(exc.to_wire(), status=exc.http_status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> SandboxdError:
    if exc.status == 413:
        return PayloadTooLarge(f"request body is larger than the daemon's limit: {exc.text}")
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        return MethodNotAllowed(f"method not allowed; allowed: {exc.headers.get('Allow', '')}")
    return SandboxdError(exc.reason, code="http_error", http_status=exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error body; never a traceback, never an HTML page."""
    try:
        return await handler(request)
    except SandboxdError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        return error_response(_from_http_exception(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(SandboxdError("internal error; see the daemon's log"))


async def healthz(request: web.Request) -> web.Response:
    return model_response(Health())


async def info(request: web.Request) -> web.Response:
    settings, backend = request.app[SETTINGS], request.app[BACKEND]
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
            active_runs=request.app[RUNS].active,
            queued_runs=request.app[RUNS].queued,
            capabilities=backend.capabilities(),
        )
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())


async def create_run(request: web.Request) -> web.Response:
    run_request = parse_body(RunRequest, await request.read())
    result = await request.app[RUNS].run(run_request)
    return model_response(result)


def make_backend(settings: Settings) -> Backend:
    return NsjailBackend(settings)


def make_app(settings: Settings, backend: Backend | None = None) -> web.Application:
    """The daemon's application; the backend is started and stopped with it."""
    app = web.Application(
        client_max_size=settings.max_request_bytes, middlewares=[error_middleware]
    )
    app[SETTINGS] = settings
    app[BACKEND] = backend or make_backend(settings)
    app[RUNS] = RunManager(settings, app[BACKEND])

    async def backend_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[BACKEND].start()
        yield
        await app[BACKEND].close()

    app.cleanup_ctx.append(backend_lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/info", info)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/runs", create_run)
    return app
