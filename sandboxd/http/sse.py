"""Runs answered as Server-Sent Events (`Accept: text/event-stream`).

The stream starts only once the run has its id: a request refused before that (bad input,
quota, overload) gets the usual 4xx/5xx JSON answer. Then: `start`, `stdout`/`stderr` chunks as
they arrive (only what fits the output cap), and `exit` with the full result, or `error`.
A client that goes away cancels its run, as `DELETE /v1/runs/{id}` would: it ends `cancelled`,
its `message` saying the client disconnected (`interrupted` means the daemon died or stopped).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web

from sandboxd.backends.base import RunControl
from sandboxd.errors import SandboxdError
from sandboxd.http.request import F, doc
from sandboxd.models import RunEvent, RunRequest, RunResult
from sandboxd.observability import traceparent
from sandboxd.service.runs import StreamedControl

EVENT_STREAM = "text/event-stream"
GONE_POLL_S = 0.25
GONE_CANCEL_S = 30.0
log = logging.getLogger("sandboxd.http.sse")
OUTPUT_EVENTS: dict[str, Literal["stdout", "stderr"]] = {"stdout": "stdout", "stderr": "stderr"}
Runner = Callable[[RunControl], Awaitable[RunResult]]
"""Starts the run with the control it is given; its result, or the error that refused it."""
OnResult = Callable[[RunResult], None]


def wants_stream(request: web.Request) -> bool:
    return EVENT_STREAM in request.headers.get("Accept", "")


def run_doc(summary: str, *, scope: str, not_found: bool = False, **more: Any) -> Callable[[F], F]:
    """What every route that runs code promises: a `RunRequest` in, the `RunResult` out
    (whatever its status), or a stream of events (`sandboxd.http.sse`); refused for bad input
    (400), size (413), a quota (429) or a saturated daemon (503), and 404 where the run goes
    into an object that may not exist (`not_found`)."""
    return doc(
        summary,
        {200: ("the run's result, whatever its status", RunResult)},
        body=RunRequest,
        errors=(400, 404, 413, 429, 503) if not_found else (400, 413, 429, 503),
        scope=scope,
        sse=True,
        **more,
    )


async def answer_run(
    request: web.Request, runner: Runner, on_result: OnResult, trace_id: str
) -> web.StreamResponse:
    """The answer to a request for a run (`POST /v1/runs`, `POST /v1/sandboxes/{id}/runs`):
    a stream of events if the client accepts one, else its result as JSON. `on_result` sees
    the result first (to note it for the audit record)."""
    if wants_stream(request):
        return await stream_run(request, runner, on_result, trace_id)
    result = await runner(RunControl())
    on_result(result)
    return web.Response(text=result.model_dump_json(), content_type="application/json")


def sse(event: RunEvent) -> bytes:
    """One event in the SSE wire format (its JSON is a single line)."""
    body = event.model_dump_json(exclude_none=True)
    return f"event: {event.event}\ndata: {body}\n\n".encode()


async def stream_run(
    request: web.Request, runner: Runner, on_result: OnResult, trace_id: str
) -> web.StreamResponse:
    """Start `runner` with a control that feeds the stream; answer with the stream (its
    headers carry `trace_id`: the middleware cannot add them to a stream once started)."""
    queue: asyncio.Queue[RunEvent] = asyncio.Queue()
    started = asyncio.Event()
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}

    def on_start(run_id: str) -> None:
        queue.put_nowait(RunEvent(event="start", run_id=run_id))
        started.set()

    def on_output(stream: str, chunk: bytes) -> None:
        if text := decoders[stream].decode(chunk):
            queue.put_nowait(
                RunEvent(event="stdout" if stream == "stdout" else "stderr", data=text)
            )

    control = StreamedControl(on_output=on_output, on_start=on_start)
    task = asyncio.ensure_future(runner(control))
    start_wait = asyncio.ensure_future(started.wait())
    response: web.StreamResponse | None = None
    try:
        await asyncio.wait({task, start_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            result = await task  # refused before it started: an ordinary error answer
            on_result(result)
            raise SandboxdError("the run finished without starting")  # pragma: no cover
        response = web.StreamResponse(
            headers={
                "Content-Type": EVENT_STREAM,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "traceparent": traceparent(trace_id),
                "X-Trace-Id": trace_id,
            }
        )
        await response.prepare(request)
        while not task.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait(
                {getter, task}, timeout=GONE_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter.done():
                await response.write(sse(getter.result()))
            else:
                getter.cancel()
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client went away")
        while not queue.empty():
            await response.write(sse(queue.get_nowait()))
        try:
            result = task.result()
        except SandboxdError as exc:
            await response.write(sse(RunEvent(event="error", error=exc.to_wire()["error"])))
        except Exception:
            log.exception("streamed run failed")
            internal = SandboxdError("internal error; see the daemon's log")
            await response.write(sse(RunEvent(event="error", error=internal.to_wire()["error"])))
        else:
            for stream, decoder in decoders.items():
                if tail := decoder.decode(b"", final=True):
                    await response.write(sse(RunEvent(event=OUTPUT_EVENTS[stream], data=tail)))
            on_result(result)
            await response.write(sse(RunEvent(event="exit", run_id=result.id, result=result)))
        await response.write_eof()
        return response
    except ConnectionResetError:
        if response is None:
            raise
        if not task.done():  # the client went away: its run is cancelled, as by DELETE
            await _cancel_for_gone(task, control)
        if task.done() and not task.cancelled() and task.exception() is None:
            on_result(task.result())
        return response  # nobody reads it; the audit records the stream's status
    finally:
        start_wait.cancel()
        if not task.done():  # the handler itself was cancelled (the daemon stops)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SandboxdError):
                await task


async def _cancel_for_gone(task: asyncio.Future[RunResult], control: StreamedControl) -> None:
    """Cancel the run of a client that went away and wait (bounded) for its result, which
    is recorded `cancelled` with a message that says so."""
    control.client_gone = True
    control.cancel.set()
    await asyncio.wait({task}, timeout=GONE_CANCEL_S)
    if not task.done():  # `finally` cancels the task
        log.warning("a run did not end %s s after its client went away", GONE_CANCEL_S)


async def follow_run(
    request: web.Request,
    run_id: str,
    earlier: list[tuple[str, bytes]],
    queue: asyncio.Queue[tuple[str, bytes] | None],
    done: asyncio.Future[RunResult] | None,
    trace_id: str,
) -> web.StreamResponse:
    """The events of a run someone else started, as its own stream would have them: `start`,
    what it printed so far and then as it comes (`earlier`, then `queue` until None), and
    `exit` with its result (from `done`, which is None for a run already recorded).
    A follower that goes away changes nothing for the run."""
    response = web.StreamResponse(
        headers={
            "Content-Type": EVENT_STREAM,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "traceparent": traceparent(trace_id),
            "X-Trace-Id": trace_id,
        }
    )
    await response.prepare(request)
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}

    async def write(stream: str, chunk: bytes, final: bool = False) -> None:
        if text := decoders[stream].decode(chunk, final=final):
            await response.write(sse(RunEvent(event=OUTPUT_EVENTS[stream], data=text)))

    try:
        await response.write(sse(RunEvent(event="start", run_id=run_id)))
        for stream, chunk in earlier:
            await write(stream, chunk)
        while (item := await queue.get()) is not None:
            await write(*item)
        for stream in decoders:
            await write(stream, b"", final=True)
        if done is not None:
            try:
                result = await asyncio.shield(done)
            except SandboxdError as exc:
                await response.write(sse(RunEvent(event="error", error=exc.to_wire()["error"])))
            else:
                await response.write(sse(RunEvent(event="exit", run_id=run_id, result=result)))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the follower left; the run goes on
    return response
