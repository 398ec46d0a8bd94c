"""The MCP tool table without a jail: schemas, words for every status, caps, error mapping,
and `/mcp` of the in-process app (fake backend) driven by the SDK's own HTTP client."""

from __future__ import annotations

import json
import typing

import aiohttp
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from sandboxd.client import Client as SandboxdClient
from sandboxd.errors import Forbidden, LimitTooHigh, NotFound
from sandboxd.integrations.mcp import SERVER_ERROR, mcp_error
from sandboxd.integrations.mcp_tools import (
    TOOLS,
    cap,
    execution_status_words,
    input_schema,
    run_status_words,
)
from sandboxd.models import ExecutionResult, ExecutionStatus, Limits, RunResult, RunStatus
from tests.unit.conftest import App


def test_every_schema_is_an_object_without_refs() -> None:
    for tool in TOOLS:
        schema = input_schema(tool.args)
        assert schema["type"] == "object", tool.name
        assert "$ref" not in json.dumps(schema) and "$defs" not in schema, tool.name
    network = input_schema(TOOLS[0].args)["properties"]["network"]
    assert network["properties"]["mode"]["enum"] == ["none", "allowlist"]


def test_every_run_status_has_words() -> None:
    limits = Limits(wall_time_s=2, memory_mib=64)
    for status in typing.get_args(RunStatus):
        words = run_status_words(RunResult(id="run_x", status=status, exit_code=1, limits=limits))
        assert words.startswith(status if status != "killed" else "killed by"), words
    timeout = RunResult(id="r", status="timeout", limits=limits, message="slow")
    assert run_status_words(timeout) == "timeout: killed after its wall time limit of 2 s (slow)"


def test_every_execution_status_has_words() -> None:
    for status in typing.get_args(ExecutionStatus):
        assert execution_status_words(ExecutionResult(status=status), 3).startswith(status)


def test_cap_keeps_head_and_tail() -> None:
    assert cap("short", 10) == "short"
    capped = cap("a" * 50 + "b" * 50, 30)
    assert capped.startswith("a" * 20) and capped.endswith("b" * 10)
    assert "[... 70 characters cut ...]" in capped


def test_errors_keep_our_codes() -> None:
    too_high = mcp_error(LimitTooHigh("too much", field="limits.memory_mib"))
    assert too_high.code == types.INVALID_PARAMS
    assert too_high.data == {
        "code": "limit_too_high",
        "message": "too much",
        "field": "limits.memory_mib",
    }
    assert mcp_error(NotFound("no such sandbox")).code == SERVER_ERROR
    assert mcp_error(Forbidden("no scope")).data["code"] == "forbidden"


async def test_http_mcp_in_process_over_the_fake_backend(app: App) -> None:
    url = str(app.http.make_url("/mcp"))
    headers = app.headers()
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("run_code", {"code": "print('hi')\nexit 3"})
        with pytest.raises(MCPError) as refused:
            await client.call_tool("create_sandbox", {"ttl_s": 0})
    assert names == [t.name for t in TOOLS]
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    assert result.structured_content["backend"] == "fake"
    assert refused.value.data["field"] == "ttl_s"
    assert [c.request.code for c in app.backend.calls] == ["print('hi')\nexit 3"]


async def test_a_client_leaves_a_shared_session_open() -> None:
    """/mcp's tool calls share the app's loopback session: a call's client must not close it."""
    session = aiohttp.ClientSession()
    try:
        async with SandboxdClient("http://127.0.0.1:9", token="t", session=session) as client:
            assert client._http() is session
        assert not session.closed
    finally:
        await session.close()
