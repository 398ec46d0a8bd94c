"""Handlers of `/v1/sandboxes`: lifecycle, runs in a sandbox, its files and a tar of it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from aiohttp import web

from sandboxd.backends.base import RunControl
from sandboxd.backends.host.workspace import WorkTree
from sandboxd.errors import InvalidRequest, NotFound, PayloadTooLarge
from sandboxd.http.keys import (
    METRICS,
    RUNS,
    SANDBOXES,
    SETTINGS,
    TRACE_ID,
    doc,
    model_response,
    note,
    require,
)
from sandboxd.http.runs import run_summary
from sandboxd.http.sse import stream_run, wants_stream
from sandboxd.models import (
    MAIN_FILE,
    FileInfo,
    RunRequest,
    RunResult,
    Sandbox,
    SandboxCreate,
    SandboxList,
    normalise_relative_path,
)
from sandboxd.service.policy import parse_body, request_digest

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
    errors=(400, 413, 429, 503),
    scope=SCOPE,
)
async def create(request: web.Request) -> web.Response:
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


def _check_isolation(sandbox: Sandbox, run_request: RunRequest) -> None:
    """A run in a sandbox runs where the sandbox lives: asking for elsewhere is refused."""
    if run_request.backend is not None and run_request.backend != sandbox.backend:
        raise InvalidRequest(
            f"this sandbox runs on {sandbox.backend}; its runs cannot choose backend "
            f"{run_request.backend!r} (leave `backend` out)",
            field="backend",
        )
    if run_request.image is not None and run_request.image != sandbox.image:
        raise InvalidRequest(
            f"this sandbox runs in image {sandbox.image!r}; its runs cannot choose another "
            "(leave `image` out)",
            field="image",
        )


class CodeMain:
    """The main file a `code` run writes into a sandbox's workspace: the request's, not the
    workspace's. While it exists a marker beside the disk (root-owned, outside the workspace)
    names it and its digest, so that it goes after the run, or, after a crash, before the next
    one; a file of that name that the workspace owns is never overwritten, nor removed."""

    def __init__(self, tree: WorkTree, marker: Path, max_bytes: int) -> None:
        self.tree, self.marker, self.max_bytes = tree, marker, max_bytes

    def clear_leftover(self) -> None:
        """Remove what a run that did not finish left (a crash of the daemon), if unchanged."""
        try:
            name, digest = self.marker.read_text().split()
        except (FileNotFoundError, ValueError):
            return
        if name in MAIN_FILE.values():
            self._drop(name, digest)
        self.marker.unlink(missing_ok=True)

    def claim(self, main: str, code: bytes) -> None:
        if self.tree.exists(main):
            raise InvalidRequest(
                f"the workspace already holds {main!r}, which `code` would overwrite: "
                "delete it first, or run it without `code`",
                field="code",
            )
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{main} {hashlib.sha256(code).hexdigest()}\n")

    def release(self, main: str, code: bytes) -> None:
        self._drop(main, hashlib.sha256(code).hexdigest())
        self.marker.unlink(missing_ok=True)

    def _drop(self, name: str, digest: str) -> None:
        """Remove `name` if it still holds what the daemon wrote (a run may have made it its
        own: then it stays, like any file of the workspace)."""
        with contextlib.suppress(InvalidRequest, NotFound, PayloadTooLarge, OSError):
            data = self.tree.read_file(name, max_bytes=self.max_bytes)
            if hashlib.sha256(data).hexdigest() == digest:
                self.tree.delete(name)


@routes.post("/v1/sandboxes/{sandbox_id}/runs", name="sandbox.run")
@doc(
    "Run in the sandbox's workspace",
    {200: ("the run's result, whatever its status", RunResult)},
    body=RunRequest,
    errors=(400, 404, 413, 429, 503),
    scope=SCOPE,
    sse=True,
    params=SBX,
)
async def run(request: web.Request) -> web.StreamResponse:
    """Run in the sandbox's workspace. `code` is the request's, not the workspace's: its main
    file is written for the run and removed after it, and a workspace file of that name is
    never overwritten (400)."""
    principal = require(request, SCOPE)
    sandbox_id = _sandbox_id(request)
    manager = request.app[SANDBOXES]
    sandbox = await manager.get(principal, sandbox_id)  # 404 before reading a body
    run_request = parse_body(RunRequest, await request.read())
    _check_isolation(sandbox, run_request)

    async def runner(control: RunControl) -> RunResult:
        async with manager.lock(sandbox_id):
            sandbox, mount = await manager.mount_for(principal, sandbox_id)
            update: dict[str, object] = {"limits": manager.run_limits(sandbox, run_request.limits)}
            if "language" not in run_request.model_fields_set:
                update["language"] = sandbox.language
            if "network" not in run_request.model_fields_set:
                update["network"] = sandbox.network
            update["backend"], update["image"] = sandbox.backend, sandbox.image
            effective = run_request.model_copy(update=update)
            note(request, req=request_digest(effective))
            main, code = MAIN_FILE[effective.language], effective.code.encode()
            owned = CodeMain(
                await manager.tree(principal, sandbox_id),
                manager.disk(sandbox_id).root / "main.owned",
                request.app[SETTINGS].max_request_bytes,
            )
            await asyncio.to_thread(owned.clear_leftover)
            if code:
                await asyncio.to_thread(owned.claim, main, code)
            await manager.touch(sandbox_id)
            try:
                result = await request.app[RUNS].run(
                    effective,
                    principal=principal,
                    trace_id=request[TRACE_ID],
                    sandbox=mount,
                    sandbox_id=sandbox_id,
                    control=control,
                )
            finally:
                if code:
                    await asyncio.shield(asyncio.to_thread(owned.release, main, code))
            await manager.touch(sandbox_id)
            return result

    def noted(result: RunResult) -> None:
        note(request, result={"run_id": result.id, **run_summary(result)})

    if wants_stream(request):
        return await stream_run(request, runner, noted)
    result = await runner(RunControl())
    noted(result)
    return model_response(result)


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
    tree = await manager.tree(principal, sandbox_id)
    data = await _body(request, request.app[SETTINGS].max_file_bytes)
    async with manager.lock(sandbox_id):
        await manager.get(principal, sandbox_id)
        await asyncio.to_thread(tree.write_file, rel, data)
        await manager.touch(sandbox_id)
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
    manager = request.app[SANDBOXES]
    tree = await manager.tree(principal, sandbox_id)
    cap = request.app[SETTINGS].max_file_bytes
    async with manager.lock(sandbox_id):
        data = await asyncio.to_thread(tree.read_file, rel, max_bytes=cap)
        await manager.touch(sandbox_id)
    return web.Response(body=data, content_type="application/octet-stream")


@routes.delete(FILES, name="file.delete")
@doc("Delete a file", {204: ("deleted", None)}, errors=(400, 404), scope=SCOPE, params=FILE)
async def delete_file(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    sandbox_id, rel = _sandbox_id(request), _path(request)
    manager = request.app[SANDBOXES]
    tree = await manager.tree(principal, sandbox_id)
    async with manager.lock(sandbox_id):
        await asyncio.to_thread(tree.delete, rel)
        await manager.touch(sandbox_id)
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
    manager = request.app[SANDBOXES]
    tree = await manager.tree(principal, sandbox_id)
    tmp_dir = request.app[SETTINGS].state_dir / "tmp"

    def build() -> int:
        tmp_dir.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".tar")
        os.unlink(name)  # the open fd keeps it until we are done
        tree.archive_to_fd(fd)
        return fd

    async with manager.lock(sandbox_id):
        fd = await asyncio.to_thread(build)
        await manager.touch(sandbox_id)
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
