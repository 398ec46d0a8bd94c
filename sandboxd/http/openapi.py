"""The OpenAPI document, generated from the route tables and the wire models (never by hand).

Each handler declares its route (`RouteTableDef`) and what it promises (`request.doc`) beside
its code; this module walks a router and turns that into OpenAPI 3.1, so that a route cannot be
served without being documented (`tests/jail/test_openapi.py` checks every route of the app).
HEAD, which aiohttp adds beside every GET, is left out.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from sandboxd import __version__
from sandboxd.http.request import Content, RouteDoc, route_doc
from sandboxd.models import ErrorResponse, RunEvent

REF = "#/components/schemas/{model}"
SSE = "text/event-stream"
ERRORS = {
    400: "bad input (invalid_json, invalid_request, unknown_field, limit_too_high)",
    401: "missing, unknown or revoked bearer token (unauthorized)",
    403: "the token lacks this route's scope (forbidden)",
    404: "no such object, or another tenant's (not_found)",
    409: "the object is not in a state that allows this (conflict)",
    413: "the body or a file is over a size cap (payload_too_large)",
    429: "the tenant is at a quota (quota_exceeded); see Retry-After",
    503: "the daemon is saturated (overloaded, see Retry-After) or cannot provide the "
    "isolation asked for (backend_unavailable)",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def _documented(router: web.UrlDispatcher) -> list[tuple[str, str, str, RouteDoc, str]]:
    found = []
    for route in router.routes():
        meta = route_doc(route.handler)
        if route.method == "HEAD" or meta is None:
            continue
        doc_text = inspect.getdoc(route.handler) or ""
        name = route.resource.name if route.resource else None
        path = route.resource.canonical if route.resource else ""
        found.append((route.method.lower(), path, name or path, meta, doc_text))
    return found


def _models(docs: list[RouteDoc]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (ErrorResponse, "serialization"),
        (RunEvent, "serialization"),
    ]
    for meta in docs:
        if isinstance(meta.body, type):
            wanted.append((meta.body, "validation"))
        if isinstance(meta.sse, type):
            wanted.append((meta.sse, "serialization"))
        for _, content in meta.responses.values():
            if isinstance(content, type):
                wanted.append((content, "serialization"))
    return list(dict.fromkeys(wanted))


def _content(content: Content, refs: dict[Any, Any], mode: JsonSchemaMode) -> dict[str, Any]:
    if isinstance(content, type):
        return {"application/json": {"schema": refs[(content, mode)]}}
    if content == "application/json":
        return {content: {"schema": {"type": "object"}}}
    if content == SSE:  # a stream of events, each {event, data}: data is a RunEvent as JSON
        event = {"type": "string", "enum": ["start", "stdout", "stderr", "exit", "error"]}
        data = {"type": "string", "contentMediaType": "application/json"}
        schema = {"type": "object", "properties": {"event": event, "data": data}}
        return {content: {"schema": schema}}
    if content and content.startswith("text/"):
        return {content: {"schema": {"type": "string"}}}
    return {str(content): {"schema": {"type": "string", "format": "binary"}}}


def _operation(
    name: str, path: str, meta: RouteDoc, text: str, refs: dict[Any, Any]
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, content) in meta.responses.items():
        answer: dict[str, Any] = {"description": description}
        if content is not None:
            answer["content"] = _content(content, refs, "serialization")
            if meta.sse:
                events = (
                    f"a {meta.sse.__name__} as JSON (see its schema)"
                    if isinstance(meta.sse, type)
                    else "a RunEvent as JSON (start, stdout, stderr, exit or error)"
                )
                answer["content"][SSE] = {
                    "schema": {
                        "type": "string",
                        "description": "With `Accept: text/event-stream`: Server-Sent Events, "
                        f"each `data` {events}.",
                    }
                }
        responses[str(status)] = answer
    errors = set(meta.errors) | (set() if meta.public else {401}) | ({403} if meta.scope else set())
    for status in sorted(errors):
        error = _content(ErrorResponse, refs, "serialization")
        answer = {"description": ERRORS[status], "content": error}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses[str(status)] = answer
    op: dict[str, Any] = {
        "operationId": name.replace(".", "_"),
        "summary": meta.summary,
        "tags": [name.split(".")[0]],
        "responses": responses,
    }
    if text:
        op["description"] = text
    if meta.scope:
        op["description"] = f"{text}\n\nScope: `{meta.scope}` (or `admin`).".strip()
    if meta.public:
        op["security"] = []
    params = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "description": meta.params.get(p, p),
            "schema": {"type": "string", "minLength": 1},
        }
        for p in re.findall(r"\{(\w+)\}", path)
    ]
    params += [
        {"name": q, "in": "query", "required": False, "description": d, "schema": schema}
        for q, (d, schema) in meta.query.items()
    ]
    if params:
        op["parameters"] = params
    if meta.body is not None:
        # a JSON body must be there; raw bytes may be none (an empty file)
        required = isinstance(meta.body, type)
        body = _content(meta.body, refs, "validation")
        op["requestBody"] = {"required": required, "content": body}
    return op


def build_openapi(router: web.UrlDispatcher) -> dict[str, Any]:
    """The document of `router` (`sandboxd.http.routes.router()`: every route the daemon has)."""
    routes = _documented(router)
    refs, defs = models_json_schema(_models([r[3] for r in routes]), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, name, meta, text in routes:
        paths.setdefault(path, {})[method] = _operation(name, path, meta, text, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sandboxd", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `sandboxd token create`.",
                }
            },
        },
        "security": [{"bearer": []}],
    }
