"""Handlers of `/v1/sandboxes/{id}/contexts`: interpreter contexts (Jupyter kernels) in a
sandbox, and executions in them, answered as JSON or streamed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from aiohttp import web

from sandboxd.errors import InvalidRequest, SandboxdError
from sandboxd.http.keys import CONTEXTS
from sandboxd.http.request import TRACE_ID, doc, model_response, note, require
from sandboxd.http.sse import EVENT_STREAM, wants_stream
from sandboxd.models import (
    CONTEXT_ID,
    ContextInfo,
    ContextList,
    ContextSpec,
    ExecuteRequest,
    ExecutionEvent,
    ExecutionResult,
    RichOutput,
)
from sandboxd.observability import traceparent
from sandboxd.service.policy import parse_body

SCOPE = "sandboxes"
routes = web.RouteTableDef()
BASE = "/v1/sandboxes/{sandbox_id}/contexts"
ONE = BASE + "/{context_id}"
SBX = {"sandbox_id": "A sandbox's id (`sbx_...`)."}
CTX = {**SBX, "context_id": "A context's id (`ctx_...`)."}
_CONTEXT_ID = re.compile(CONTEXT_ID)
GONE_POLL_S = 0.25
log = logging.getLogger("sandboxd.http.contexts")


def _ids(request: web.Request) -> tuple[str, str]:
    sandbox_id = request.match_info["sandbox_id"]
    context_id = request.match_info.get("context_id", "")
    note(request, target=f"{sandbox_id}/{context_id}" if context_id else sandbox_id)
    if context_id and not _CONTEXT_ID.match(context_id):
        raise InvalidRequest(f"{context_id[:64]!r} is not a context id", field="context_id")
    return sandbox_id, context_id


@routes.post(BASE, name="context.create")
@doc(
    "Start an interpreter context in a sandbox",
    {201: ("the context, ready", ContextInfo)},
    body=ContextSpec,
    errors=(400, 404, 429, 503),
    scope=SCOPE,
    params=SBX,
)
async def create(request: web.Request) -> web.Response:
    """A Jupyter kernel in the sandbox, over its workspace: variables, imports and open files
    persist between executions. Memory and pids are the sandbox's limits, for the whole
    kernel; it has no network."""
    principal = require(request, SCOPE)
    sandbox_id, _ = _ids(request)
    spec = parse_body(ContextSpec, await request.read())
    note(request, req={**spec.model_dump(mode="json", exclude={"env"}), "env": sorted(spec.env)})
    info = await request.app[CONTEXTS].create(principal, sandbox_id, spec)
    note(request, target=f"{sandbox_id}/{info.id}")
    return model_response(info, status=201)


@routes.get(BASE, name="context.list")
@doc("A sandbox's contexts", {200: ("its contexts", ContextList)}, errors=(404,), scope=SCOPE)
async def list_contexts(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandbox_id, _ = _ids(request)
    contexts = await request.app[CONTEXTS].list_for(principal, sandbox_id)
    return model_response(ContextList(contexts=contexts))


@routes.get(ONE, name="context.get")
@doc("One context", {200: ("the context", ContextInfo)}, errors=(400, 404), scope=SCOPE, params=CTX)
async def get(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    return model_response(await request.app[CONTEXTS].get(principal, *_ids(request)))


@routes.delete(ONE, name="context.delete")
@doc("Stop and forget a context", {204: ("deleted", None)}, errors=(400, 404), scope=SCOPE)
async def delete(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    await request.app[CONTEXTS].delete(principal, *_ids(request))
    return web.Response(status=204)


@routes.post(ONE + "/interrupt", name="context.interrupt")
@doc(
    "Interrupt the execution in progress",
    {200: ("the context", ContextInfo)},
    errors=(400, 404, 409),
    scope=SCOPE,
    params=CTX,
)
async def interrupt(request: web.Request) -> web.Response:
    """As Ctrl-C: the running code gets a KeyboardInterrupt; its result says `interrupted`."""
    principal = require(request, SCOPE)
    return model_response(await request.app[CONTEXTS].interrupt(principal, *_ids(request)))


@routes.post(ONE + "/restart", name="context.restart")
@doc(
    "Restart a context's kernel",
    {200: ("the context, with a fresh kernel", ContextInfo)},
    errors=(400, 404, 503),
    scope=SCOPE,
    params=CTX,
)
async def restart(request: web.Request) -> web.Response:
    """Kills the kernel (mid-execution or not) and starts a fresh one: variables are lost,
    the workspace's files stay. Also brings a dead context back."""
    principal = require(request, SCOPE)
    return model_response(await request.app[CONTEXTS].restart(principal, *_ids(request)))


@routes.post(ONE + "/execute", name="context.execute")
@doc(
    "Execute code in a context",
    {200: ("the execution's result, whatever its status", ExecutionResult)},
    body=ExecuteRequest,
    errors=(400, 404, 409),
    scope=SCOPE,
    params=CTX,
    sse=ExecutionEvent,
)
async def execute(request: web.Request) -> web.StreamResponse:
    """Run code as a notebook cell. An exception, a timeout (interrupted, then the kernel
    killed if it does not stop) or the kernel's death is the result's `status`; a context
    already dead is 409."""
    principal = require(request, SCOPE)
    sandbox_id, context_id = _ids(request)
    body = parse_body(ExecuteRequest, await request.read())
    note(request, req={"code_bytes": len(body.code.encode()), "timeout_s": body.timeout_s})
    manager = request.app[CONTEXTS]
    if not wants_stream(request):
        result = await manager.execute(principal, sandbox_id, context_id, body)
        _noted(request, result)
        return model_response(result)
    manager.admit(principal, sandbox_id, context_id, body)  # 4xx as JSON, before the stream
    queue: asyncio.Queue[ExecutionEvent] = asyncio.Queue()

    def on_event(kind: str, data: Any) -> None:
        if isinstance(data, RichOutput):
            queue.put_nowait(ExecutionEvent(event="result", output=data))
        elif kind in ("stdout", "stderr"):
            queue.put_nowait(ExecutionEvent(event=kind, data=str(data)))

    task = asyncio.ensure_future(manager.execute(principal, sandbox_id, context_id, body, on_event))
    response = web.StreamResponse(
        headers={
            "Content-Type": EVENT_STREAM,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "traceparent": traceparent(request[TRACE_ID]),
            "X-Trace-Id": request[TRACE_ID],
        }
    )
    try:
        await response.prepare(request)
        await response.write(_sse(ExecutionEvent(event="start", context_id=context_id)))
        while not task.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait(
                {getter, task}, timeout=GONE_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter.done():
                await response.write(_sse(getter.result()))
            else:
                getter.cancel()
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client went away")
        while not queue.empty():
            await response.write(_sse(queue.get_nowait()))
        try:
            result = task.result()
        except SandboxdError as exc:
            await response.write(_sse(ExecutionEvent(event="error", error=exc.to_wire()["error"])))
        except Exception:
            log.exception("streamed execution failed")
            internal = SandboxdError("internal error; see the daemon's log").to_wire()["error"]
            await response.write(_sse(ExecutionEvent(event="error", error=internal)))
        else:
            _noted(request, result)
            await response.write(_sse(ExecutionEvent(event="done", result=result)))
        await response.write_eof()
    except ConnectionResetError:
        # The client went away: its execution is interrupted, as by POST .../interrupt.
        if not task.done():
            with contextlib.suppress(SandboxdError):
                await manager.interrupt(principal, sandbox_id, context_id)
    finally:
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError, SandboxdError):
                await asyncio.wait_for(task, body.timeout_s + 10)
    return response


def _sse(event: ExecutionEvent) -> bytes:
    return f"event: {event.event}\ndata: {event.model_dump_json(exclude_none=True)}\n\n".encode()


def _noted(request: web.Request, result: ExecutionResult) -> None:
    note(
        request,
        result={
            "status": result.status,
            "execution_count": result.execution_count,
            "wall_time_s": result.wall_time_s,
        },
    )
