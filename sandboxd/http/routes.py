"""Every route the daemon serves: one table per resource module, declared beside its handlers.

A new resource is a module with its `RouteTableDef` (each handler with its `@doc`) and one
entry here; `make_app` registers exactly these tables and `/openapi.json` documents them.
"""

from __future__ import annotations

from aiohttp import web

from sandboxd.http import contexts, overview, runs, sandboxes, snapshots, solves
from sandboxd.http.request import route_doc

TABLES: tuple[web.RouteTableDef, ...] = (
    runs.routes,
    sandboxes.routes,
    snapshots.routes,
    contexts.routes,
    solves.routes,
    overview.routes,
)


def router() -> web.UrlDispatcher:
    """A router holding every route (for the OpenAPI document outside an app)."""
    dispatcher = web.UrlDispatcher()
    for table in TABLES:
        dispatcher.add_routes(table)
    return dispatcher


def public_paths() -> frozenset[str]:
    """Paths that need no token: those whose routes are declared `public`."""
    return frozenset(
        d.path
        for table in TABLES
        for d in table
        if isinstance(d, web.RouteDef) and (meta := route_doc(d.handler)) and meta.public
    )
