"""The MCP tools of sandboxd: one table, each tool an argument model (its JSON schema is the
tool's input schema) and a call on `sandboxd.client.Client`.

The same table serves both transports (`sandboxd.integrations.mcp`): over stdio the client
talks to a daemon; inside the daemon (`/mcp`) it talks to the daemon's own `/v1` API with the
caller's token, so scopes, quotas, audit records and error codes are exactly those of `/v1`.
A run's failure (non-zero exit, timeout, a limit) is a result whose status is said in words;
a refused request is an MCP error carrying the daemon's error code (`data.code`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.models import (
    CONTEXT_ID,
    ExecuteRequest,
    ExecutionResult,
    RunRequest,
    RunResult,
    SandboxCreate,
    normalise_relative_path,
)

#: Characters of each stream (and of a file read) a tool result carries: a model's context
#: is smaller than a run's output cap (1 MiB per stream by default).
MAX_OUTPUT_CHARS = 20_000
MAX_LISTED_FILES = 1000
SANDBOX_ID = r"^sbx_[0-9a-f]{1,32}$"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif")
KINDS = {"f": "file", "d": "dir", "l": "link"}  # find's %y


def cap(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text` within `limit` characters: its head and tail, saying how much was cut."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InSandbox(_Args):
    sandbox_id: str = Field(pattern=SANDBOX_ID, description="The sandbox's id (`sbx_...`).")


class SandboxRunArgs(RunRequest):
    """`run_in_sandbox`: a run's fields plus the sandbox; unset fields take the sandbox's."""

    sandbox_id: str = Field(pattern=SANDBOX_ID, description="The sandbox's id (`sbx_...`).")


class WriteFileArgs(InSandbox):
    path: str = Field(description="Path relative to the workspace; parents are created.")
    content: str = Field("", description="The file's content, in `encoding`.")
    encoding: Literal["utf-8", "base64"] = "utf-8"

    _path = field_validator("path")(normalise_relative_path)

    @model_validator(mode="after")
    def _decodable(self) -> WriteFileArgs:
        self.data()
        return self

    def data(self) -> bytes:
        if self.encoding == "utf-8":
            return self.content.encode()
        try:
            return base64.b64decode(self.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"content is not valid base64: {exc}") from None


class ReadFileArgs(InSandbox):
    path: str = Field(description="Path relative to the workspace.")

    _path = field_validator("path")(normalise_relative_path)


class ListFilesArgs(InSandbox):
    path: str | None = Field(None, description="A directory of the workspace (default: all).")

    _path = field_validator("path")(lambda v: None if v is None else normalise_relative_path(v))


class ExecuteArgs(ExecuteRequest):
    """`execute`: a notebook cell in the sandbox's interpreter context."""

    sandbox_id: str = Field(pattern=SANDBOX_ID, description="The sandbox's id (`sbx_...`).")
    context_id: str | None = Field(
        None,
        pattern=CONTEXT_ID,
        description="The context to run in; default: the sandbox's live one, else a new one.",
    )


Call = Callable[[Client, Any], Awaitable[types.CallToolResult]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    call: Call
    read_only: bool = False
    destructive: bool = False

    def spec(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=self.description,
            input_schema=input_schema(self.args),
            annotations=types.ToolAnnotations(
                read_only_hint=self.read_only, destructive_hint=self.destructive
            ),
        )


def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every `$ref` inlined (clients and models read it better)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref.removeprefix("#/$defs/")]), **inline(rest)}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


def _result(
    text: str, structured: dict[str, Any], *blocks: types.ContentBlock
) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=text), *blocks], structured_content=structured
    )


def run_status_words(result: RunResult) -> str:
    """What happened to a run, in words (the first line of its tool result)."""
    limits = result.limits
    words = {
        "ok": f"ok: exited with code {result.exit_code}",
        "failed": f"failed: exited with code {result.exit_code}",
        "timeout": f"timeout: killed after its wall time limit of {limits.wall_time_s:g} s",
        "cpu_limit": f"cpu_limit: killed after its CPU time limit of {limits.cpu_time_s:g} s",
        "memory_limit": f"memory_limit: killed for going over {limits.memory_mib} MiB of memory",
        "output_limit": "output_limit: killed for printing more than "
        f"{limits.output_bytes} bytes on one stream",
        "killed": f"killed by {result.signal or 'a signal'}",
        "cancelled": "cancelled before it finished",
        "error": "error: the sandbox could not run it",
    }[result.status]
    return f"{words} ({result.message})" if result.message else words


def _streams(stdout: str, stderr: str) -> list[str]:
    parts = []
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        if text:
            parts += [f"--- {name} ---", cap(text)]
    return parts or ["(no output)"]


def run_result(result: RunResult) -> types.CallToolResult:
    head = f"status: {run_status_words(result)}"
    where = f"run {result.id}" + (f" in sandbox {result.sandbox_id}" if result.sandbox_id else "")
    lines = [head, f"{where}, {result.usage.wall_time_s:.2f} s"]
    structured = result.model_dump(mode="json", exclude={"files", "limits"})
    structured.update(stdout=cap(result.stdout), stderr=cap(result.stderr))
    structured["stdout_truncated"] = (
        result.stdout_truncated or len(result.stdout) > MAX_OUTPUT_CHARS
    )
    structured["stderr_truncated"] = (
        result.stderr_truncated or len(result.stderr) > MAX_OUTPUT_CHARS
    )
    structured["files"] = [{"path": f.path, "size": f.size} for f in result.files]
    if result.files:
        lines.append("collected: " + ", ".join(f"{f.path} ({f.size} bytes)" for f in result.files))
    return _result("\n".join(lines + _streams(result.stdout, result.stderr)), structured)


async def run_code(client: Client, args: RunRequest) -> types.CallToolResult:
    return run_result(await client.run(args))


async def run_in_sandbox(client: Client, args: SandboxRunArgs) -> types.CallToolResult:
    fields = args.model_dump(exclude_unset=True, exclude={"sandbox_id"})
    return run_result(
        await client.run_in_sandbox(args.sandbox_id, RunRequest.model_validate(fields))
    )


async def create_sandbox(client: Client, args: SandboxCreate) -> types.CallToolResult:
    sandbox = await client.create_sandbox(args)
    text = (
        f"sandbox {sandbox.id} created ({sandbox.language}, {sandbox.backend}); its workspace "
        f"persists between runs until deleted or {sandbox.ttl_s} s without use"
    )
    return _result(text, sandbox.model_dump(mode="json"))


async def delete_sandbox(client: Client, args: InSandbox) -> types.CallToolResult:
    await client.delete_sandbox(args.sandbox_id)
    return _result(f"sandbox {args.sandbox_id} deleted", {"sandbox_id": args.sandbox_id})


def _url_path(path: str) -> str:
    return quote(path, safe="/")


async def write_file(client: Client, args: WriteFileArgs) -> types.CallToolResult:
    info = await client.put_file(args.sandbox_id, _url_path(args.path), args.data())
    return _result(f"wrote {info.size} bytes to {info.path}", info.model_dump(mode="json"))


async def read_file(client: Client, args: ReadFileArgs) -> types.CallToolResult:
    data = await client.get_file(args.sandbox_id, _url_path(args.path))
    try:
        content, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(data).decode(), "base64"
    shown = cap(content)
    structured = {
        "path": args.path,
        "size": len(data),
        "encoding": encoding,
        "content": shown,
        "truncated": shown != content,
    }
    head = f"{args.path}: {len(data)} bytes" + (", base64" if encoding == "base64" else "")
    return _result(f"{head}\n{shown}", structured)


async def list_files(client: Client, args: ListFilesArgs) -> types.CallToolResult:
    """Listed by `find` run in the sandbox (names may hold any byte but NUL)."""
    top = f"./{args.path}" if args.path else "."
    run = await client.run_in_sandbox(
        args.sandbox_id,
        RunRequest(command=["find", top, "-mindepth", "1", "-printf", r"%y %s %P\0"]),
    )
    if run.status != "ok":
        return run_result(run)
    entries = []
    for item in run.stdout.split("\0"):
        kind, _, rest = item.partition(" ")
        size, _, name = rest.partition(" ")
        if name:
            rel = f"{args.path}/{name}" if args.path else name
            entries.append({"path": rel, "type": KINDS.get(kind, "other"), "size": int(size)})
    entries.sort(key=lambda e: str(e["path"]))
    shown = entries[:MAX_LISTED_FILES]
    lines = [f"{e['path']}{'/' if e['type'] == 'dir' else ''}  {e['size']}" for e in shown]
    more = len(entries) - len(shown)
    text = "\n".join(lines or ["(empty)"]) + (f"\n[... {more} more ...]" if more else "")
    return _result(text, {"files": shown, "total": len(entries)})


def execution_status_words(result: ExecutionResult, timeout_s: float) -> str:
    words = {
        "ok": "ok",
        "error": "error: the code raised "
        + (f"{result.error.name}: {result.error.value}" if result.error else "an exception"),
        "timeout": f"timeout: interrupted after {timeout_s:g} s",
        "interrupted": "interrupted",
        "killed": "killed: the interpreter is gone (its variables with it)",
        "memory_limit": "memory_limit: the interpreter went over the sandbox's memory limit",
        "cpu_limit": "cpu_limit: the interpreter used up the sandbox's CPU time limit",
        "output_limit": "output_limit: it printed more than the output cap",
    }[result.status]
    return f"{words} ({result.message})" if result.message else words


async def execute(client: Client, args: ExecuteArgs) -> types.CallToolResult:
    context_id = args.context_id
    if context_id is None:
        contexts = await client.list_contexts(args.sandbox_id)
        live = sorted((c for c in contexts if c.status != "dead"), key=lambda c: c.status != "idle")
        context = live[0] if live else await client.create_context(args.sandbox_id)
        context_id = context.id
    result = await client.execute(args.sandbox_id, context_id, args.code, timeout_s=args.timeout_s)
    lines = [
        f"status: {execution_status_words(result, args.timeout_s)}",
        f"context {context_id}, execution {result.execution_count}, {result.wall_time_s:.2f} s",
    ]
    lines += _streams(result.stdout, result.stderr) if result.stdout or result.stderr else []
    if result.error and result.error.traceback:
        lines += ["--- traceback ---", cap("\n".join(result.error.traceback))]
    images: list[types.ContentBlock] = []
    for out in result.results:
        if out.mime in IMAGE_MIMES:
            images.append(types.ImageContent(data=out.data, mime_type=out.mime))
        elif out.mime == "text/plain":
            lines += [f"--- {'Out' if out.is_result else 'display'} ---", cap(out.data)]
    structured = result.model_dump(mode="json")
    structured.update(context_id=context_id, stdout=cap(result.stdout), stderr=cap(result.stderr))
    structured["results"] = [
        {**r.model_dump(mode="json"), "data": r.data if r.mime in IMAGE_MIMES else cap(r.data)}
        for r in result.results
    ]
    return _result("\n".join(lines), structured, *images)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "run_code",
        "Run code once in a fresh, isolated sandbox (python, bash or node) and get its status, "
        "exit code and output. Limits (wall time, memory, ...) and network rules are fields.",
        RunRequest,
        run_code,
    ),
    Tool(
        "create_sandbox",
        "Create a persistent sandbox: a workspace whose files survive between runs. Returns "
        "its id, for run_in_sandbox, write_file, read_file, list_files, execute.",
        SandboxCreate,
        create_sandbox,
    ),
    Tool(
        "run_in_sandbox",
        "Run code or a command in a sandbox's workspace (files persist, processes do not).",
        SandboxRunArgs,
        run_in_sandbox,
    ),
    Tool("write_file", "Write a file into a sandbox's workspace.", WriteFileArgs, write_file),
    Tool(
        "read_file",
        "Read a file of a sandbox's workspace (text, or base64 when binary).",
        ReadFileArgs,
        read_file,
        read_only=True,
    ),
    Tool(
        "list_files",
        "List the files of a sandbox's workspace (path, type, size).",
        ListFilesArgs,
        list_files,
        read_only=True,
    ),
    Tool(
        "execute",
        "Run Python as a notebook cell in the sandbox's interpreter context: variables and "
        "imports persist between calls; results include display data (PNG figures as images).",
        ExecuteArgs,
        execute,
    ),
    Tool(
        "delete_sandbox",
        "Delete a sandbox and its workspace.",
        InSandbox,
        delete_sandbox,
        destructive=True,
    ),
)

__all__ = ["MAX_OUTPUT_CHARS", "TOOLS", "SandboxdError", "Tool", "cap", "input_schema"]
