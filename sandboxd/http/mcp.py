"""`/mcp`: the Model Context Protocol over streamable HTTP, in the daemon's own aiohttp app.

The MCP SDK's streamable HTTP transport is an ASGI application; this module hands it each
`/mcp` request through a small ASGI bridge (the body in, the status, headers and body chunks
out, as they come), on the daemon's own event loop: no second server, no thread. The SDK runs
stateless (every POST stands alone, no session to keep or hijack), after the daemon's
middlewares have checked the bearer token, traced and counted the request.

A tool call uses the tool table of `sandboxd.integrations.mcp_tools` with a client of this
daemon's own `/v1` API (the address the request came in on, the caller's token, its trace
id), so that what an MCP caller may do, and what is audited, is exactly what `/v1` says.

`/mcp` is not in `/openapi.json`: it speaks JSON-RPC as the MCP specification defines it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
from aiohttp import web
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from sandboxd.client import Client
from sandboxd.http.keys import SETTINGS
from sandboxd.http.request import TRACE_ID
from sandboxd.integrations.mcp import Context, build_server
from sandboxd.observability import traceparent

PATH = "/mcp"
MANAGER = web.AppKey("mcp_manager", StreamableHTTPSessionManager)


class Loopback:
    """The app's HTTP session to its own /v1, opened when the app starts (a session is made
    on the loop), closed when it stops; shared by every tool call, whatever its token."""

    session: aiohttp.ClientSession | None = None


LOOPBACK = web.AppKey("mcp_loopback", Loopback)
SCOPE_KEY = "sandboxd"  # in the ASGI scope: how tool calls reach this daemon's /v1
Message = MutableMapping[str, Any]


def _self_url(request: web.Request) -> str:
    """This daemon's address as the request reached it (the socket it came in on)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
    else:
        settings = request.app[SETTINGS]
        host, port = settings.host, settings.port
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def _loopback_client(ctx: Context) -> AsyncIterator[Client]:
    """A client of this daemon's /v1 for one tool call, as the MCP request's caller (over the
    app's one loopback session, whose connections are kept: ~5 ms less than a new one)."""
    where = ctx.request.scope[SCOPE_KEY] if ctx.request is not None else None
    if not isinstance(where, dict):
        raise RuntimeError("an /mcp tool call without its request")
    client = Client(
        where["url"],
        token=where["token"],
        traceparent=where["traceparent"],
        session=where["session"],
    )
    async with client:
        yield client


def _scope(request: web.Request, token: str) -> dict[str, Any]:
    host = request.transport.get_extra_info("peername") if request.transport else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [
            (k.lower().encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for k, v in request.headers.items()
        ],
        "client": host[:2] if isinstance(host, tuple) else None,
        "server": None,
        SCOPE_KEY: {
            "url": _self_url(request),
            "token": token,
            "traceparent": traceparent(request[TRACE_ID]),
            "session": request.app[LOOPBACK].session,
        },
    }


async def handle(request: web.Request) -> web.StreamResponse:
    """One MCP message exchange, answered by the SDK's transport through the ASGI bridge."""
    token = request.headers["Authorization"].partition(" ")[2].strip()
    body = await request.read()  # bounded by the app's client_max_size
    done = asyncio.Event()
    delivered = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the exchange is over (or the client went): nothing more comes
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for key, value in message.get("headers", []):
                name = key.decode("latin-1")
                if name.lower() not in ("content-length", "transfer-encoding"):
                    response.headers.add(name, value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body" and response is not None:
            if chunk := message.get("body", b""):
                await response.write(chunk)
            if not message.get("more_body", False):
                await response.write_eof()

    try:
        await request.app[MANAGER].handle_request(_scope(request, token), receive, send)
    finally:
        done.set()
    if response is None:
        raise web.HTTPInternalServerError(text="the MCP transport sent no answer")
    return response


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The SDK's session manager runs in a task of its own (its cancel scopes stay in one
    task), from the app's start to its cleanup; the loopback session lives as long."""
    manager = app[MANAGER]
    # total=None: each call sets its own timeout (a run's wall time and slack); no cookie jar:
    # nothing of one caller's answers may ride along with another's calls
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar()
    )
    app[LOOPBACK].session = session
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            started.set()
            await stop.wait()

    try:
        task = asyncio.create_task(hold())
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            waiter.cancel()
            await task  # raises what stopped it from starting
        yield
        stop.set()
        await task
    finally:
        app[LOOPBACK].session = None
        await session.close()


def add_routes(app: web.Application) -> None:
    """`POST /mcp` and its manager's lifecycle. POST only: a stateless server has nothing to
    push on a GET stream, nor a session to DELETE; both are 405 (as the specification allows),
    so no idle stream is held open."""
    app[MANAGER] = StreamableHTTPSessionManager(
        app=build_server(_loopback_client),
        stateless=True,
        json_response=True,
        max_request_body_size=app[SETTINGS].max_request_bytes,
    )
    app[LOOPBACK] = Loopback()
    app.router.add_post(PATH, handle, name="mcp")
    app.cleanup_ctx.append(lifecycle)
