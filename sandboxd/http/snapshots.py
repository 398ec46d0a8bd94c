"""Handlers of snapshots: take one of a sandbox, list, read and delete them.

A sandbox starts from one with `POST /v1/sandboxes` and `from_snapshot` (`sandboxd.http.
sandboxes`). Kept apart from the sandbox routes because a snapshot is an object of its own,
with its own ids and lifetime (it outlives its sandbox). The audit record of each call names
the snapshot as its `target` (a snapshot's creation: the new snapshot, and the sandbox it was
taken from in its result).
"""

from __future__ import annotations

from aiohttp import web

from sandboxd.http.keys import SANDBOXES
from sandboxd.http.request import doc, model_response, note, require
from sandboxd.models import Snapshot, SnapshotCreate, SnapshotList
from sandboxd.service.policy import parse_body

SCOPE = "sandboxes"
routes = web.RouteTableDef()
SBX = {"sandbox_id": "A sandbox's id (`sbx_...`)."}
SNAP = {"snapshot_id": "A snapshot's id (`snap_...`)."}


def _snapshot_id(request: web.Request) -> str:
    snapshot_id = request.match_info["snapshot_id"]
    note(request, target=snapshot_id)
    return snapshot_id


@routes.post("/v1/sandboxes/{sandbox_id}/snapshots", name="snapshot.create")
@doc(
    "Snapshot a sandbox's workspace",
    {201: ("the snapshot", Snapshot)},
    body=SnapshotCreate,
    errors=(400, 404, 409, 429, 503),
    scope=SCOPE,
    params=SBX,
)
async def create(request: web.Request) -> web.Response:
    """Copy the workspace as it is between runs (a run in flight is waited for). The sandbox
    goes on as before; the snapshot never changes. Of a sandbox started from a snapshot, the
    snapshot holds what that sandbox wrote, stacked on the one it started from (409 beyond
    16 such layers). Send `{}` for no labels. With `ttl_s` it is a cache: it goes after
    that long unused, or sooner, least recently used first, to make room for a new snapshot
    of its tenant over the snapshot-disk quota (each such deletion is audited)."""
    principal = require(request, SCOPE)
    sandbox_id = request.match_info["sandbox_id"]
    note(request, target=sandbox_id)
    manager = request.app[SANDBOXES]
    await manager.get(principal, sandbox_id)  # 404 before reading a body
    spec = parse_body(SnapshotCreate, await request.read())
    note(request, req={"sandbox_id": sandbox_id, "labels": spec.labels, "ttl_s": spec.ttl_s})
    snapshot = await manager.snapshot(principal, sandbox_id, spec)
    note(
        request,
        target=snapshot.id,
        result={"sandbox_id": sandbox_id, "size_bytes": snapshot.size_bytes},
    )
    return model_response(snapshot, status=201)


@routes.get("/v1/snapshots", name="snapshot.list")
@doc("The caller's snapshots", {200: ("its snapshots", SnapshotList)}, scope=SCOPE)
async def list_snapshots(request: web.Request) -> web.Response:
    """The tenant's snapshots, oldest first (every tenant's for an admin token)."""
    principal = require(request, SCOPE)
    snapshots = await request.app[SANDBOXES].snapshots.list_for(principal)
    return model_response(SnapshotList(snapshots=snapshots))


@routes.get("/v1/snapshots/{snapshot_id}", name="snapshot.get")
@doc("One snapshot", {200: ("the snapshot", Snapshot)}, errors=(404,), scope=SCOPE, params=SNAP)
async def get(request: web.Request) -> web.Response:
    principal = require(request, SCOPE)
    snapshots = request.app[SANDBOXES].snapshots
    return model_response(await snapshots.get(principal, _snapshot_id(request)))


@routes.delete("/v1/snapshots/{snapshot_id}", name="snapshot.delete")
@doc(
    "Delete a snapshot",
    {204: ("deleted", None)},
    errors=(404, 409),
    scope=SCOPE,
    params=SNAP,
)
async def delete(request: web.Request) -> web.Response:
    """Refused (409, naming them) while sandboxes started from it, or snapshots taken of
    those, exist."""
    principal = require(request, SCOPE)
    await request.app[SANDBOXES].snapshots.delete(principal, _snapshot_id(request))
    return web.Response(status=204)
