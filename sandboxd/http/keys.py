"""The typed application state: one `web.AppKey` per object `make_app` builds.

Kept apart from the per-request helpers (`sandboxd.http.request`) because this is the HTTP
module that names the service layer's managers, to type them: whatever needs only the request
(the stream of a run, the route docs) stays below it in the import graph.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sandboxd.backends.base import Backend
from sandboxd.observability import Metrics, Tracer
from sandboxd.service.contexts import ContextManager
from sandboxd.service.identity import StateClaim
from sandboxd.service.runs import RunManager
from sandboxd.service.sandboxes import SandboxManager
from sandboxd.service.solves import SolveBook
from sandboxd.service.store import Store
from sandboxd.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
BACKEND = web.AppKey("backend", Backend)
STORE = web.AppKey("store", Store)
RUNS = web.AppKey("runs", RunManager)
SANDBOXES = web.AppKey("sandboxes", SandboxManager)
CONTEXTS = web.AppKey("contexts", ContextManager)
SOLVES = web.AppKey("solves", SolveBook)
METRICS = web.AppKey("metrics", Metrics)
TRACER = web.AppKey("tracer", Tracer)
CLAIM = web.AppKey("claim", StateClaim)
OPENAPI = web.AppKey("openapi", dict[str, Any])  # built once by make_app from its routes
