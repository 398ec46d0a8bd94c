"""sandboxd's MCP server (the official `mcp` SDK's low-level `Server`) over its tool table.

`build_server(connect)` answers `tools/list` and `tools/call` from `mcp_tools.TOOLS`;
`connect(ctx)` gives the `sandboxd.client.Client` a call uses: over stdio (`serve_stdio`, what
`sandboxd mcp` runs) one client of a daemon for the whole session; inside the daemon
(`sandboxd.http.mcp`) a client of its own `/v1` with the token of the HTTP request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from sandboxd.client import Client
from sandboxd.errors import InvalidRequest, SandboxdError, validation_error
from sandboxd.integrations.mcp_tools import TOOLS

Context = ServerRequestContext[Any, Any]
Connect = Callable[[Context], AbstractAsyncContextManager[Client]]
#: JSON-RPC code of a refused request that is not the arguments' fault (the spec leaves
#: -32000..-32099 to servers); `data.code` says which of sandboxd's error codes it is.
SERVER_ERROR = -32000
#: Error codes whose fault is in the tool's arguments: JSON-RPC's "invalid params".
ARGUMENT_ERRORS = frozenset(
    {"invalid_request", "invalid_json", "unknown_field", "limit_too_high", "payload_too_large"}
)
INSTRUCTIONS = (
    "sandboxd runs untrusted code in isolated, resource-limited sandboxes. run_code runs once "
    "in a fresh sandbox; create_sandbox gives a workspace whose files persist for "
    "run_in_sandbox, write_file, read_file, list_files and execute (a Python interpreter whose "
    "variables persist). A run's status (ok, failed, timeout, memory_limit, ...) is said on "
    "the first line of its result."
)


def _version() -> str:
    try:
        return version("sandboxd")
    except PackageNotFoundError:
        return "0"


def mcp_error(exc: SandboxdError) -> MCPError:
    """A refused request as an MCP (JSON-RPC) error carrying sandboxd's code and field."""
    rpc = types.INVALID_PARAMS if exc.code in ARGUMENT_ERRORS else SERVER_ERROR
    data = {"code": exc.code, "message": exc.message, "field": exc.field}
    return MCPError(rpc, f"{exc.code}: {exc.message}", data)


def build_server(connect: Connect) -> Server[Any]:
    by_name = {tool.name: tool for tool in TOOLS}
    specs = [tool.spec() for tool in TOOLS]  # once: generating the schemas takes milliseconds
    schemas = {spec.name: spec.input_schema for spec in specs}

    async def list_tools(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=specs)

    async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = by_name.get(params.name)
        try:
            if tool is None:
                known = ", ".join(by_name)
                raise InvalidRequest(f"no tool {params.name!r}; the tools are {known}")
            try:
                args = tool.args.model_validate(params.arguments or {})
            except ValidationError as exc:
                raise validation_error(exc) from None
            async with connect(ctx) as client:
                return await tool.call(client, args)
        except SandboxdError as exc:
            raise mcp_error(exc) from None

    return Server(
        "sandboxd",
        version=_version(),
        instructions=INSTRUCTIONS,
        get_tool_input_schema=schemas.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(url: str | None = None, token: str | None = None) -> None:
    """Serve MCP on stdin/stdout, every tool call forwarded to the daemon at `url`."""
    client = Client(url, token=token)

    @asynccontextmanager
    async def shared(ctx: Context) -> AsyncIterator[Client]:
        yield client

    server = build_server(shared)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await client.close()
