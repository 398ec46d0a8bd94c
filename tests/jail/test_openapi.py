"""`/openapi.json` documents every route, and a client generated from it drives the daemon.

The document is generated from the route tables (`sandboxd.http.routes.TABLES`, which `make_app`
adds and nothing else) and the metadata beside each handler; a route without metadata is left
out of it, which the first test catches. The second generates a client with
`openapi-python-client` from the running daemon's document, into a tmp dir, and uses it.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from sandboxd.http import openapi, routes
from tests.daemon import Daemon

GENERATE_TIMEOUT_S = 120


def served(daemon: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.request("/openapi.json"), timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def missing(router: web.UrlDispatcher, doc: dict[str, Any]) -> list[str]:
    """Routes of `router` (HEAD aside: aiohttp adds it beside every GET) absent from `doc`."""
    absent = []
    for route in router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and route.method.lower() not in doc["paths"].get(path, {}):
            absent.append(f"{route.method} {path}")
    return absent


def app_router() -> web.UrlDispatcher:
    app = web.Application()
    for table in routes.TABLES:  # exactly what make_app registers
        app.router.add_routes(table)
    return app.router


def test_every_route_is_documented(daemon: Daemon) -> None:
    doc = served(daemon)
    validate(doc)
    router = app_router()
    assert missing(router, doc) == []
    # 17 + 4 of snapshots + 8 of Studio + 7 of contexts
    assert sum(len(ops) for ops in doc["paths"].values()) == 36
    # /mcp speaks JSON-RPC as the MCP specification defines it (sandboxd.http.mcp): not a
    # REST operation, so not in the document; it is added beside the tables, not in them
    assert "/mcp" not in doc["paths"]
    assert all(getattr(d, "path", None) != "/mcp" for table in routes.TABLES for d in table)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert ops[("get", "/healthz")]["security"] == []
    assert "401" not in ops[("get", "/healthz")]["responses"]
    for (method, path), op in ops.items():
        if path != "/healthz":
            assert {"401"} <= set(op["responses"]), (method, path)
    run = ops[("post", "/v1/runs")]
    assert {"400", "401", "403", "413", "429", "503"} <= set(run["responses"])
    assert set(run["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    put = ops[("put", "/v1/sandboxes/{sandbox_id}/files/{path}")]
    assert set(put["requestBody"]["content"]) == {"application/octet-stream"}
    assert [p["name"] for p in put["parameters"]] == ["sandbox_id", "path"]
    assert (
        "application/x-tar"
        in ops[("get", "/v1/sandboxes/{sandbox_id}/archive")]["responses"]["200"]["content"]
    )
    assert "text/plain" in ops[("get", "/metrics")]["responses"]["200"]["content"]
    assert "409" in ops[("delete", "/v1/runs/{run_id}")]["responses"]
    snapshot_statuses = {
        ("post", "/v1/sandboxes/{sandbox_id}/snapshots"): {"201", "400", "404", "409", "429"},
        ("get", "/v1/snapshots"): {"200", "401", "403"},
        ("get", "/v1/snapshots/{snapshot_id}"): {"200", "404"},
        ("delete", "/v1/snapshots/{snapshot_id}"): {"204", "404", "409"},
        ("post", "/v1/sandboxes"): {"201", "404", "429"},
    }
    for key, statuses in snapshot_statuses.items():
        assert statuses <= set(ops[key]["responses"]), key


def test_a_route_without_metadata_is_caught(daemon: Daemon) -> None:
    """The check above fails when a handler lacks its `doc`: a route added bare."""
    router = app_router()

    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    router.add_get("/v1/undocumented", bare, name="bare")
    assert missing(router, openapi.build_openapi(router)) == ["GET /v1/undocumented"]
    assert missing(router, served(daemon)) == ["GET /v1/undocumented"]


def generate_client(daemon: Daemon, tmp_path: Path) -> Any:
    spec, config = tmp_path / "openapi.json", tmp_path / "config.json"
    spec.write_text(json.dumps(served(daemon)))
    # It parses no tar; as octet-stream the archive comes back as a File of raw bytes.
    config.write_text(
        json.dumps(
            {
                "package_name_override": "sbx_generated",
                "content_type_overrides": {"application/x-tar": "application/octet-stream"},
            }
        )
    )
    argv = [
        str(Path(sys.executable).with_name("openapi-python-client")),
        "generate",
        "--path",
        str(spec),
        "--config",
        str(config),
        "--meta",
        "none",
        "--output-path",
        str(tmp_path / "sbx_generated"),
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module("sbx_generated")
    finally:
        sys.path.remove(str(tmp_path))


def test_a_generated_client_drives_a_sandbox(daemon: Daemon, tmp_path: Path) -> None:
    gen = generate_client(daemon, tmp_path)
    api = importlib.import_module("sbx_generated.api.sandbox")
    files = importlib.import_module("sbx_generated.api.file")
    models = importlib.import_module("sbx_generated.models")
    types = importlib.import_module("sbx_generated.types")
    for mod in ("sandbox_create", "sandbox_run", "sandbox_archive", "sandbox_delete"):
        importlib.import_module(f"sbx_generated.api.sandbox.{mod}")
    importlib.import_module("sbx_generated.api.file.file_put")
    with gen.AuthenticatedClient(base_url=daemon.url, token=daemon.token, timeout=60) as c:
        sandbox = api.sandbox_create.sync(client=c, body=models.SandboxCreate())
        assert isinstance(sandbox, models.Sandbox), sandbox
        try:
            info = files.file_put.sync(
                sandbox.id,
                "data.txt",
                client=c,
                body=types.File(payload=io.BytesIO(b"from the generated client\n")),
            )
            assert isinstance(info, models.FileInfo) and info.size == 26, info
            code = "print(open('data.txt').read().upper(), end='')"
            result = api.sandbox_run.sync(sandbox.id, client=c, body=models.RunRequest(code=code))
            assert isinstance(result, models.RunResult), result
            assert result.status == models.RunResultStatus.OK, result
            assert result.stdout == "FROM THE GENERATED CLIENT\n"
            archive = api.sandbox_archive.sync_detailed(sandbox.id, client=c)
            assert archive.status_code == 200
            with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
                member = tar.extractfile(next(m for m in tar if m.name.endswith("data.txt")))
                assert member is not None and member.read() == b"from the generated client\n"
        finally:
            gone = api.sandbox_delete.sync_detailed(sandbox.id, client=c)
            assert gone.status_code == 204


def test_audit_paging_refuses_odd_digits(daemon: Daemon) -> None:
    """A 500 the wider fuzzing could reach: "²" is a digit that int() refuses, and 5000 digits
    are more than int() parses. Both are a 400 naming the field."""
    for raw in ("%C2%B2", "1" * 5000):
        req = daemon.request(f"/v1/audit?after={raw}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10).close()
        with refused.value as err:
            body = json.loads(err.read())
        assert refused.value.code == 400, body
        assert body["error"]["field"] == "after"
