"""Handlers of `/v1/sandboxes`: lifecycle, runs in a sandbox, its files and a tar of it."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import quote

from aiohttp import web

from sandboxd.backends.base import RunControl
from sandboxd.errors import InvalidRequest, PayloadTooLarge
from sandboxd.http.keys import METRICS, RUNS, SANDBOXES, SETTINGS
from sandboxd.http.request import TRACE_ID, doc, model_response, note, require
from sandboxd.http.sse import answer_run, run_doc
from sandboxd.models import (
    FileInfo,
    RunRequest,
    RunResult,
    Sandbox,
    SandboxCreate,
    SandboxList,
    normalise_relative_path,
)
from sandboxd.service.policy import parse_body
from sandboxd.service.runs import run_summary

SCOPE = "sandboxes"
routes = web.RouteTableDef()
SBX = {"sandbox_id": "A sandbox's id (`sbx_...`)."}
FILE = {**SBX, "path": "Workspace-relative path of a file (may hold `/`; no `..`)."}
FILES = "/v1/sandboxes/{sandbox_id}/files/{path:.+}"


def _sandbox_id(request: web.Request) -> str:
    sandbox_id = request.match_info["sandbox_id"]
    note(request, target=sandbox_id)
    return sandbox_id


def _path(request: web.Request) -> str:
    try:
        rel = normalise_relative_path(request.match_info["path"])
    except ValueError as exc:
        raise InvalidRequest(f"path: {exc}", field="path") from None
    note(request, req={"path": rel})
    return rel


@routes.post("/v1/sandboxes", name="sandbox.create")
@doc(
    "Create a persistent sandbox",
    {201: ("the sandbox", Sandbox)},
    body=SandboxCreate,
    errors=(400, 404, 413, 429, 503),
    scope=SCOPE,
)
async def create(request: web.Request) -> web.Response:
    """With `from_snapshot`, the sandbox's workspace starts as that snapshot's (one of the
    caller's own, else 404), copy-on-write: nothing is copied at creation."""
    principal = require(request, SCOPE)
    spec = parse_body(SandboxCreate, await request.read())
    note(request, req=spec.model_dump(mode="json"))
    sandbox = await request.app[SANDBOXES].create(principal, spec, request.app[RUNS])
    request.app[METRICS].active_sandboxes.inc()
    note(request, target=sandbox.id)
    return model_response(sandbox, status=201)


@routes.get("/v1/sandboxes", name="sandbox.list")
@doc("The caller's sandboxes", {200: ("its sandboxes", SandboxList)}, scope=SCOPE)
async def list_sandboxes(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandboxes = await request.app[SANDBOXES].list_for(principal)
    return model_response(SandboxList(sandboxes=sandboxes))


@routes.get("/v1/sandboxes/{sandbox_id}", name="sandbox.get")
@doc("One sandbox", {200: ("the sandbox", Sandbox)}, errors=(404,), scope=SCOPE, params=SBX)
async def get(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    return model_response(await request.app[SANDBOXES].get(principal, _sandbox_id(request)))


@routes.delete("/v1/sandboxes/{sandbox_id}", name="sandbox.delete")
@doc("Delete a sandbox", {204: ("deleted", None)}, errors=(404,), scope=SCOPE, params=SBX)
async def delete(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    await request.app[SANDBOXES].delete(principal, _sandbox_id(request))
    request.app[METRICS].active_sandboxes.dec()
    return web.Response(status=204)


@routes.post("/v1/sandboxes/{sandbox_id}/runs", name="sandbox.run")
@run_doc("Run in the sandbox's workspace", scope=SCOPE, params=SBX, not_found=True)
async def run(request: web.Request) -> web.StreamResponse:
    """Run in the sandbox's workspace. `code` is the request's, not the workspace's: its main
    file is written for the run and removed after it, and a workspace file of that name is
    never overwritten (400)."""
    principal = require(request, SCOPE)
    manager = request.app[SANDBOXES]
    sandbox = await manager.get(principal, _sandbox_id(request))  # 404 before reading a body
    prepared = manager.prepare_run(sandbox, parse_body(RunRequest, await request.read()))
    note(request, req=prepared.digest)

    async def runner(control: RunControl) -> RunResult:
        runs, trace_id = request.app[RUNS], request[TRACE_ID]
        return await manager.run(principal, prepared, runs=runs, trace_id=trace_id, control=control)

    def noted(result: RunResult) -> None:
        note(request, result={"run_id": result.id, **run_summary(result)})

    return await answer_run(request, runner, noted, request[TRACE_ID])


async def _body(request: web.Request, cap: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"file is larger than the daemon's limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@routes.put(FILES, name="file.put")
@doc(
    "Write a file (raw bytes)",
    {201: ("written", FileInfo)},
    body="application/octet-stream",
    errors=(400, 404, 413),
    scope=SCOPE,
    params=FILE,
)
async def put_file(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandbox_id, rel = _sandbox_id(request), _path(request)
    manager = request.app[SANDBOXES]
    await manager.get(principal, sandbox_id)  # 404 before reading a body
    data = await _body(request, request.app[SETTINGS].max_file_bytes)
    await manager.write_file(principal, sandbox_id, rel, data)
    note(request, result={"size": len(data)})
    return model_response(FileInfo(path=rel, size=len(data)), status=201)


@routes.get(FILES, name="file.get")
@doc(
    "Read a file (raw bytes)",
    {200: ("its bytes", "application/octet-stream")},
    errors=(400, 404, 413),
    scope=SCOPE,
    params=FILE,
)
async def get_file(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandbox_id, rel = _sandbox_id(request), _path(request)
    data = await request.app[SANDBOXES].read_file(principal, sandbox_id, rel)
    name = quote(rel.rsplit("/", 1)[-1], safe="")  # the sandbox chose it: quoted, never raw
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
    )


@routes.delete(FILES, name="file.delete")
@doc("Delete a file", {204: ("deleted", None)}, errors=(400, 404), scope=SCOPE, params=FILE)
async def delete_file(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandbox_id, rel = _sandbox_id(request), _path(request)
    await request.app[SANDBOXES].delete_file(principal, sandbox_id, rel)
    return web.Response(status=204)


@routes.get("/v1/sandboxes/{sandbox_id}/archive", name="sandbox.archive")
@doc(
    "The workspace as a tar",
    {200: ("a tar of the workspace", "application/x-tar")},
    errors=(404,),
    scope=SCOPE,
    params=SBX,
)
async def archive(request: web.Request) -> web.StreamResponse:
    """The whole workspace as a tar (links stored as links, never followed)."""
    principal = require(request, SCOPE)
    sandbox_id = _sandbox_id(request)
    fd = await request.app[SANDBOXES].archive(principal, sandbox_id)
    try:
        size = os.fstat(fd).st_size
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="{sandbox_id}.tar"',
                "Content-Length": str(size),
            }
        )
        await response.prepare(request)
        offset = 0
        while offset < size:
            chunk = await asyncio.to_thread(os.pread, fd, 1 << 20, offset)
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)
        await response.write_eof()
        note(request, result={"bytes": size})
        return response
    finally:
        os.close(fd)
