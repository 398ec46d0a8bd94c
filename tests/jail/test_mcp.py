"""MCP, with the official SDK's own client, over both transports against a real daemon:
streamable HTTP at the daemon's `/mcp`, and stdio through `sandboxd mcp` (a subprocess that
forwards to the daemon). Every test runs on both, so the two cannot drift apart."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from sandboxd.integrations.mcp_tools import MAX_OUTPUT_CHARS
from tests.conftest import BACKENDS
from tests.daemon import Daemon

#: Each transport in both protocol eras the SDK speaks: the 2026-07-28 one (its default,
#: negotiated by `server/discover`) and the initialize handshake older clients use.
TRANSPORTS = ["http", "stdio", "http-legacy", "stdio-legacy"]
TOOLS = {
    "run_code",
    "create_sandbox",
    "run_in_sandbox",
    "write_file",
    "read_file",
    "list_files",
    "execute",
    "delete_sandbox",
}


@asynccontextmanager
async def connect(
    daemon: Daemon, transport: str, token: str | None = None
) -> AsyncIterator[Client]:
    token = token or daemon.token
    kind, _, era = transport.partition("-")
    mode = era or "auto"
    if kind == "http":
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
        server = streamable_http_client(f"{daemon.url}/mcp", http_client=http)
        async with http, Client(server, mode=mode) as c:
            yield c
    else:
        env = {"PATH": os.environ["PATH"], "SANDBOXD_TOKEN": token}
        argv = ["-m", "sandboxd", "mcp", "--url", daemon.url]
        params = StdioServerParameters(command=sys.executable, args=argv, env=env)
        async with Client(params, mode=mode) as c:
            yield c


def text(result: types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, args: dict[str, Any]) -> MCPError:
    with pytest.raises(MCPError) as caught:
        await client.call_tool(tool, args)
    return caught.value


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tools_are_listed_with_schemas_from_the_models(
    daemon: Daemon, transport: str
) -> None:
    async with connect(daemon, transport) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.description
        assert "$ref" not in json.dumps(tool.input_schema), tool.name
    run = tools["run_code"].input_schema["properties"]
    assert run["limits"]["properties"]["wall_time_s"]["exclusiveMinimum"] == 0
    assert run["language"]["enum"] == ["python", "bash", "node"]
    assert tools["run_in_sandbox"].input_schema["required"] == ["sandbox_id"]
    assert tools["delete_sandbox"].annotations is not None
    assert tools["delete_sandbox"].annotations.destructive_hint is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_run_code_says_its_status_and_output(daemon: Daemon, transport: str) -> None:
    async with connect(daemon, transport) as client:
        ok = await client.call_tool("run_code", {"code": "print(6 * 7)"})
        failed = await client.call_tool(
            "run_code", {"language": "bash", "code": "echo oops >&2; exit 3"}
        )
    assert text(ok).splitlines()[0] == "status: ok: exited with code 0"
    assert "--- stdout ---\n42\n" in text(ok)
    assert structured(ok)["status"] == "ok" and structured(ok)["stdout"] == "42\n"
    assert not ok.is_error
    assert text(failed).splitlines()[0] == "status: failed: exited with code 3"
    assert "--- stderr ---\noops" in text(failed)
    assert structured(failed)["exit_code"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_timeout_is_a_status_in_words(daemon: Daemon, transport: str) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(30)"
    async with connect(daemon, transport) as client:
        result = await client.call_tool("run_code", {"code": code, "limits": {"wall_time_s": 1}})
    first = text(result).splitlines()[0]
    assert first.startswith("status: timeout: killed after its wall time limit of 1 s"), first
    assert structured(result)["status"] == "timeout"
    assert "started" in text(result)  # output up to the kill is kept


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_output_is_capped_for_the_model(daemon: Daemon, transport: str) -> None:
    code = f"print('a' * {MAX_OUTPUT_CHARS * 3})\nprint('the end')"
    async with connect(daemon, transport) as client:
        result = await client.call_tool("run_code", {"code": code})
    body = structured(result)
    assert len(body["stdout"]) < MAX_OUTPUT_CHARS + 100
    assert body["stdout_truncated"] is True
    assert "characters cut" in body["stdout"] and body["stdout"].endswith("the end\n")
    assert len(text(result)) < MAX_OUTPUT_CHARS + 500


ROUND_TRIPS = [(t, "nsjail") for t in TRANSPORTS] + [("http", b) for b in BACKENDS[1:]]


@pytest.mark.parametrize(("transport", "backend"), ROUND_TRIPS)
async def test_a_sandbox_round_trip_with_files(
    daemon: Daemon, transport: str, backend: str
) -> None:
    blob = bytes(range(256))
    async with connect(daemon, transport) as client:
        spec = {"backend": backend, "limits": {"wall_time_s": 20}}
        created = await client.call_tool("create_sandbox", spec)
        assert structured(created)["backend"] == backend
        sbx = structured(created)["id"]
        assert text(created).startswith(f"sandbox {sbx} created")
        try:
            wrote = await client.call_tool(
                "write_file", {"sandbox_id": sbx, "path": "in/data.txt", "content": "3 4\n"}
            )
            assert text(wrote) == "wrote 4 bytes to in/data.txt"
            await client.call_tool(
                "write_file",
                {
                    "sandbox_id": sbx,
                    "path": "blob.bin",
                    "content": base64.b64encode(blob).decode(),
                    "encoding": "base64",
                },
            )
            code = (
                "a, b = map(int, open('in/data.txt').read().split())\n"
                "open('out.txt', 'w').write(str(a * b))\nprint('multiplied')"
            )
            ran = await client.call_tool("run_in_sandbox", {"sandbox_id": sbx, "code": code})
            assert structured(ran)["status"] == "ok"
            assert structured(ran)["sandbox_id"] == sbx
            listed = structured(await client.call_tool("list_files", {"sandbox_id": sbx}))
            files = {f["path"]: (f["type"], f["size"]) for f in listed["files"]}
            assert files == {
                "in": ("dir", files["in"][1]),
                "in/data.txt": ("file", 4),
                "blob.bin": ("file", 256),
                "out.txt": ("file", 2),
            }
            under = structured(
                await client.call_tool("list_files", {"sandbox_id": sbx, "path": "in"})
            )
            assert [f["path"] for f in under["files"]] == ["in/data.txt"]
            out = await client.call_tool("read_file", {"sandbox_id": sbx, "path": "out.txt"})
            assert structured(out)["content"] == "12" and text(out) == "out.txt: 2 bytes\n12"
            raw = structured(
                await client.call_tool("read_file", {"sandbox_id": sbx, "path": "blob.bin"})
            )
            assert raw["encoding"] == "base64" and base64.b64decode(raw["content"]) == blob
        finally:
            deleted = await client.call_tool("delete_sandbox", {"sandbox_id": sbx})
        assert text(deleted) == f"sandbox {sbx} deleted"
        gone = await refused(client, "read_file", {"sandbox_id": sbx, "path": "out.txt"})
    assert gone.data["code"] == "not_found"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_arguments_are_mcp_errors_with_our_codes(daemon: Daemon, transport: str) -> None:
    async with connect(daemon, transport) as client:
        unknown = await refused(client, "run_code", {"code": "print(1)", "bogus": 1})
        wrong = await refused(client, "run_code", {"code": "1", "limits": {"wall_time_s": -1}})
        too_high = await refused(client, "run_code", {"code": "1", "limits": {"memory_mib": 10**7}})
        bad_id = await refused(client, "read_file", {"sandbox_id": "../v1/runs", "path": "a"})
        escape = await refused(client, "read_file", {"sandbox_id": "sbx_00", "path": "../x"})
        no_tool = await refused(client, "format_disk", {})
    assert unknown.code == types.INVALID_PARAMS
    assert unknown.data == {
        "code": "unknown_field",
        "message": "unknown field 'bogus'",
        "field": "bogus",
    }
    assert (wrong.data["code"], wrong.data["field"]) == ("invalid_request", "limits.wall_time_s")
    assert (too_high.data["code"], too_high.data["field"]) == (
        "limit_too_high",
        "limits.memory_mib",
    )
    assert too_high.code == types.INVALID_PARAMS
    assert (bad_id.data["code"], bad_id.data["field"]) == ("invalid_request", "sandbox_id")
    assert (escape.data["code"], escape.data["field"]) == ("invalid_request", "path")
    assert no_tool.data["code"] == "invalid_request" and "run_code" in no_tool.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_scopes_are_those_of_v1(daemon: Daemon, transport: str) -> None:
    token = daemon.make_token("mcp-runner", "run")
    async with connect(daemon, transport, token=token) as client:
        ran = await client.call_tool("run_code", {"code": "print('allowed')"})
        forbidden = await refused(client, "create_sandbox", {})
    assert structured(ran)["status"] == "ok"
    assert forbidden.data["code"] == "forbidden"
    assert forbidden.code == -32000


async def test_http_needs_a_valid_token(daemon: Daemon) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    for token in ("", "garbage"):
        req = daemon.request("/mcp", data=body, method="POST", token=token)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib_open(req)
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["error"]["code"] == "unauthorized"
    with pytest.raises(BaseException) as failed:  # noqa: PT011  # an ExceptionGroup of the SDK's
        async with connect(daemon, "http", token="garbage") as client:
            await client.list_tools()
    assert "MCPError" in repr(failed.value)


def urllib_open(req: urllib.request.Request) -> None:
    with urllib.request.urlopen(req, timeout=30):
        pass


def test_stdio_refuses_a_bad_token_in_one_line(daemon: Daemon) -> None:
    env = {"PATH": os.environ["PATH"], "SANDBOXD_TOKEN": "garbage"}
    argv = [sys.executable, "-m", "sandboxd", "mcp", "--url", daemon.url]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 125
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sandboxd: error:"), done.stderr
    assert done.stdout == ""  # stdout is the protocol's: nothing else goes there


async def test_http_tool_calls_are_audited_as_v1_calls(daemon: Daemon) -> None:
    token = daemon.make_token("mcp-audit", "run", "audit:read")
    async with connect(daemon, "http", token=token) as client:
        result = await client.call_tool("run_code", {"code": "print('audited')"})
    run_id = structured(result)["id"]
    async with daemon.aclient(token) as c:
        records = (await c.audit(limit=1000)).records
    mine = [r for r in records if r.target == run_id]
    assert [r.action for r in mine] == ["run.create"]
    assert mine[0].tenant == "mcp-audit" and mine[0].trace_id == structured(result)["trace_id"]


def test_http_garbage_is_a_4xx_never_a_5xx(daemon: Daemon) -> None:
    """The transport's own JSON-RPC errors for what is not MCP; POST only (stateless: no
    stream to GET, no session to DELETE), like any other route's 405."""
    json_only = {"Content-Type": "application/json"}  # no Accept: the transport wants one
    accept = {"Accept": "application/json, text/event-stream", **json_only}
    cases = [
        ("POST", b"{not json", accept, 400),
        ("POST", b"[1, 2, 3]", accept, 400),
        ("POST", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', json_only, 406),
        ("GET", None, accept, 405),
        ("DELETE", None, accept, 405),
    ]
    for method, body, headers, status in cases:
        req = daemon.request("/mcp", data=body, method=method)
        for key, value in headers.items():
            req.add_header(key, value)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib_open(req)
        assert caught.value.code == status, (method, body)
        answer = json.loads(caught.value.read())
        assert "error" in answer, answer
    assert caught.value.headers["Allow"] == "POST"
