"""Python client of the daemon: an async `Client` and a blocking `SyncClient` facade.

Both return the wire models of `sandboxd.models` and raise the `sandboxd.errors` classes that
the daemon's error codes map to. The token comes from the argument, else `SANDBOXD_TOKEN`, else
the admin token a local daemon leaves in its state directory (when this user may read it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from sandboxd.errors import DaemonUnreachable, SandboxdError, error_from_wire, validation_error
from sandboxd.local_token import ADMIN_TOKEN_FILE, local_admin_token
from sandboxd.models import (
    AuditPage,
    ContextInfo,
    ContextList,
    ContextSpec,
    ExecuteRequest,
    ExecutionEvent,
    ExecutionResult,
    FileInfo,
    Health,
    Info,
    RunEvent,
    RunRecord,
    RunRequest,
    RunResult,
    Sandbox,
    SandboxCreate,
    SandboxList,
    Snapshot,
    SnapshotCreate,
    SnapshotList,
    Solve,
    SolveAppended,
    SolveCreate,
    SolveEvents,
    SolveSummary,
)

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_STATE_DIR = Path("/var/lib/sandboxd")
#: Time allowed on top of the run's own wall time limit for the HTTP exchange.
HTTP_SLACK_S = 60.0
EVENT_STREAM = "text/event-stream"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def default_url() -> str:
    return os.environ.get("SANDBOXD_URL", DEFAULT_URL)


def admin_token_path() -> Path:
    """Where `default_token` looks for a local daemon's admin token."""
    return Path(os.environ.get("SANDBOXD_STATE_DIR", DEFAULT_STATE_DIR)) / ADMIN_TOKEN_FILE


def default_token() -> str | None:
    if token := os.environ.get("SANDBOXD_TOKEN"):
        return token
    return local_admin_token(admin_token_path().parent)


def no_token_message() -> str:
    return (
        f"no token: none was given and {admin_token_path()} could not be read; pass --token "
        "or set SANDBOXD_TOKEN (root makes one with `sandboxd token create --tenant NAME "
        "--scope run`), or set SANDBOXD_STATE_DIR to the daemon's state directory"
    )


def _payload(body: bytes | str | None) -> io.BytesIO | None:
    """A body as a stream: aiohttp warns (ResourceWarning) on raw bodies over 1 MiB, which it
    would send in one write from the loop; a stream it sends in chunks."""
    if body is None:
        return None
    return io.BytesIO(body.encode() if isinstance(body, str) else body)


def _validated(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def _parse_events(content: aiohttp.StreamReader, model: type[M]) -> AsyncIterator[M]:
    """Server-Sent Events (`event:` and `data:` lines, a blank line ends one) as `model`s."""
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            try:
                yield model.model_validate_json("\n".join(data))
            except ValidationError:
                name = model.__name__
                raise DaemonUnreachable(f"sandboxd sent an event that is not a {name}") from None
            data = []


class Client:
    """Async client. Use as `async with Client() as c: result = await c.run(code=...)`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        connect_timeout_s: float = 10.0,
        traceparent: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session`: an aiohttp session to share (its connections are reused; the caller
        closes it, `close()` does not)."""
        self.url = (url or default_url()).rstrip("/")
        self.token = token if token is not None else default_token()
        self.traceparent = traceparent
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = session
        self._owns_session = session is None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s)
            )
        return self._session

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        content_type: str = "application/json",
        timeout_s: float = HTTP_SLACK_S,
    ) -> bytes:
        headers = self._headers({"content-type": content_type} if body is not None else {})
        try:
            async with self._http().request(
                method,
                self.url + path,
                data=_payload(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=self._connect_timeout_s),
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "1")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DaemonUnreachable(f"cannot reach sandboxd at {self.url}: {exc}") from exc
        if status >= 400:
            raise self._error(status, raw, retry_after)
        return raw

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(extra)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers

    def _error(self, status: int, raw: bytes, retry_after: str) -> SandboxdError:
        try:
            data: Any = json.loads(raw)
        except ValueError:
            return DaemonUnreachable(
                f"sandboxd at {self.url} answered HTTP {status} with a non-JSON body"
            )
        retry = int(retry_after) if retry_after.isdigit() else 1
        error = error_from_wire(status, data, retry_after_s=retry)
        if status == 401 and not self.token:
            error.message = no_token_message()
        return error

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: str | None = None,
        timeout_s: float = HTTP_SLACK_S,
    ) -> M:
        raw = await self._raw(method, path, body=body, timeout_s=timeout_s)
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            raise DaemonUnreachable(f"sandboxd at {self.url} answered garbage") from None

    async def health(self) -> Health:
        return await self._call("GET", "/healthz", Health)

    async def info(self) -> Info:
        return await self._call("GET", "/v1/info", Info)

    async def run(self, request: RunRequest | None = None, **fields: Any) -> RunResult:
        """Run code once. Pass a `RunRequest`, or its fields as keywords."""
        req = request if request is not None else _validated(RunRequest, fields)
        timeout = req.limits.wall_time_s + HTTP_SLACK_S
        body = req.model_dump_json(exclude_unset=True)
        return await self._call("POST", "/v1/runs", RunResult, body=body, timeout_s=timeout)

    async def stream_run(
        self,
        request: RunRequest | None = None,
        *,
        sandbox_id: str | None = None,
        **fields: Any,
    ) -> AsyncIterator[RunEvent]:
        """Run code once (in a sandbox if `sandbox_id`), yielding its events as they come:
        `start`, `stdout`/`stderr` chunks, then `exit` (with the result) or `error`."""
        req = request if request is not None else _validated(RunRequest, fields)
        path = f"/v1/sandboxes/{sandbox_id}/runs" if sandbox_id else "/v1/runs"
        timeout = aiohttp.ClientTimeout(
            total=req.limits.wall_time_s + HTTP_SLACK_S, connect=self._connect_timeout_s
        )
        headers = self._headers({"content-type": "application/json", "Accept": EVENT_STREAM})
        body = req.model_dump_json(exclude_unset=True)
        try:
            async with self._http().post(
                self.url + path, data=_payload(body), headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise self._error(resp.status, raw, resp.headers.get("Retry-After", "1"))
                async for event in _parse_events(resp.content, RunEvent):
                    yield event
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DaemonUnreachable(f"cannot reach sandboxd at {self.url}: {exc}") from exc

    async def cancel_run(self, run_id: str) -> RunResult:
        """Kill a run in progress; returns its partial result (status `cancelled`)."""
        return await self._call("DELETE", f"/v1/runs/{run_id}", RunResult)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._call("GET", f"/v1/runs/{run_id}", RunRecord)

    async def create_sandbox(self, spec: SandboxCreate | None = None, **fields: Any) -> Sandbox:
        spec = spec if spec is not None else _validated(SandboxCreate, fields)
        body = spec.model_dump_json(exclude_unset=True)
        return await self._call("POST", "/v1/sandboxes", Sandbox, body=body)

    async def list_sandboxes(self) -> list[Sandbox]:
        return (await self._call("GET", "/v1/sandboxes", SandboxList)).sandboxes

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return await self._call("GET", f"/v1/sandboxes/{sandbox_id}", Sandbox)

    async def delete_sandbox(self, sandbox_id: str) -> None:
        await self._raw("DELETE", f"/v1/sandboxes/{sandbox_id}")

    async def create_snapshot(
        self, sandbox_id: str, labels: dict[str, str] | None = None, *, ttl_s: int | None = None
    ) -> Snapshot:
        """Freeze the sandbox's workspace as it is now; sandboxes may start from it
        (`create_sandbox(from_snapshot=...)`). With `ttl_s` it is a cache the daemon deletes
        once unused for that long, or evicts to make room for a newer one."""
        fields = {"labels": labels or {}, "ttl_s": ttl_s}
        body = _validated(SnapshotCreate, fields).model_dump_json()
        return await self._call(
            "POST", f"/v1/sandboxes/{sandbox_id}/snapshots", Snapshot, body=body
        )

    async def list_snapshots(self) -> list[Snapshot]:
        return (await self._call("GET", "/v1/snapshots", SnapshotList)).snapshots

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return await self._call("GET", f"/v1/snapshots/{snapshot_id}", Snapshot)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Refused (`Conflict`) while sandboxes started from it exist."""
        await self._raw("DELETE", f"/v1/snapshots/{snapshot_id}")

    async def run_in_sandbox(
        self, sandbox_id: str, request: RunRequest | None = None, **fields: Any
    ) -> RunResult:
        req = request if request is not None else _validated(RunRequest, fields)
        timeout = req.limits.wall_time_s + HTTP_SLACK_S
        body = req.model_dump_json(exclude_unset=True)
        path = f"/v1/sandboxes/{sandbox_id}/runs"
        return await self._call("POST", path, RunResult, body=body, timeout_s=timeout)

    async def create_context(
        self, sandbox_id: str, spec: ContextSpec | None = None, **fields: Any
    ) -> ContextInfo:
        """Start an interpreter (a Jupyter kernel) in the sandbox; its variables, imports and
        open files persist between `execute` calls. Pass a `ContextSpec` or its fields."""
        spec = spec if spec is not None else _validated(ContextSpec, fields)
        body = spec.model_dump_json(exclude_unset=True)
        path = f"/v1/sandboxes/{sandbox_id}/contexts"
        return await self._call("POST", path, ContextInfo, body=body)

    async def list_contexts(self, sandbox_id: str) -> list[ContextInfo]:
        path = f"/v1/sandboxes/{sandbox_id}/contexts"
        return (await self._call("GET", path, ContextList)).contexts

    async def get_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        path = f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}"
        return await self._call("GET", path, ContextInfo)

    async def execute(
        self, sandbox_id: str, context_id: str, code: str, *, timeout_s: float = 30.0
    ) -> ExecutionResult:
        """Run `code` in the context, as a notebook cell. An exception, a timeout or a killed
        kernel is the result's `status`; a context already dead raises `Conflict`."""
        body = _validated(ExecuteRequest, {"code": code, "timeout_s": timeout_s})
        path = f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}/execute"
        return await self._call(
            "POST",
            path,
            ExecutionResult,
            body=body.model_dump_json(),
            timeout_s=timeout_s + HTTP_SLACK_S,
        )

    async def stream_execute(
        self, sandbox_id: str, context_id: str, code: str, *, timeout_s: float = 30.0
    ) -> AsyncIterator[ExecutionEvent]:
        """As `execute`, yielding events as they come: `start`, `stdout`/`stderr` chunks,
        `result` (each rich output), then `done` (with the result) or `error`."""
        body = _validated(ExecuteRequest, {"code": code, "timeout_s": timeout_s})
        path = f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}/execute"
        timeout = aiohttp.ClientTimeout(
            total=timeout_s + HTTP_SLACK_S, connect=self._connect_timeout_s
        )
        headers = self._headers({"content-type": "application/json", "Accept": EVENT_STREAM})
        try:
            async with self._http().post(
                self.url + path,
                data=_payload(body.model_dump_json()),
                headers=headers,
                timeout=timeout,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise self._error(resp.status, raw, resp.headers.get("Retry-After", "1"))
                async for event in _parse_events(resp.content, ExecutionEvent):
                    yield event
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DaemonUnreachable(f"cannot reach sandboxd at {self.url}: {exc}") from exc

    async def interrupt_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        """Interrupt the execution in progress (as Ctrl-C); its result says `interrupted`."""
        path = f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}/interrupt"
        return await self._call("POST", path, ContextInfo)

    async def restart_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        """A fresh kernel in the same context: state is lost, the workspace's files stay."""
        path = f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}/restart"
        return await self._call("POST", path, ContextInfo, timeout_s=HTTP_SLACK_S * 2)

    async def delete_context(self, sandbox_id: str, context_id: str) -> None:
        await self._raw("DELETE", f"/v1/sandboxes/{sandbox_id}/contexts/{context_id}")

    async def put_file(self, sandbox_id: str, path: str, data: bytes) -> FileInfo:
        raw = await self._raw(
            "PUT",
            f"/v1/sandboxes/{sandbox_id}/files/{path}",
            body=data,
            content_type="application/octet-stream",
        )
        return FileInfo.model_validate_json(raw)

    async def get_file(self, sandbox_id: str, path: str) -> bytes:
        return await self._raw("GET", f"/v1/sandboxes/{sandbox_id}/files/{path}")

    async def delete_file(self, sandbox_id: str, path: str) -> None:
        await self._raw("DELETE", f"/v1/sandboxes/{sandbox_id}/files/{path}")

    async def archive(self, sandbox_id: str) -> bytes:
        return await self._raw("GET", f"/v1/sandboxes/{sandbox_id}/archive")

    async def audit(self, after: int = 0, limit: int = 100) -> AuditPage:
        return await self._call("GET", f"/v1/audit?after={after}&limit={limit}", AuditPage)

    async def create_solve(self, spec: SolveCreate) -> SolveSummary:
        """Start recording a coder solve (`coder.report` does this)."""
        return await self._call("POST", "/v1/solves", SolveSummary, body=spec.model_dump_json())

    async def add_solve_events(self, solve_id: str, events: SolveEvents) -> SolveAppended:
        body = events.model_dump_json()
        return await self._call("POST", f"/v1/solves/{solve_id}/events", SolveAppended, body=body)

    async def get_solve(self, solve_id: str) -> Solve:
        return await self._call("GET", f"/v1/solves/{solve_id}", Solve)

    async def metrics(self) -> str:
        return (await self._raw("GET", "/metrics")).decode()


class SyncClient:
    """Blocking facade over `Client` (for scripts; not for use inside a running event loop)."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client(url, **kwargs)
        self.url = self._client.url

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _do(self, coro: Awaitable[T]) -> T:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def health(self) -> Health:
        return self._do(self._client.health())

    def info(self) -> Info:
        return self._do(self._client.info())

    def run(self, request: RunRequest | None = None, **fields: Any) -> RunResult:
        return self._do(self._client.run(request, **fields))

    def get_run(self, run_id: str) -> RunRecord:
        return self._do(self._client.get_run(run_id))

    def cancel_run(self, run_id: str) -> RunResult:
        return self._do(self._client.cancel_run(run_id))

    def create_sandbox(self, spec: SandboxCreate | None = None, **fields: Any) -> Sandbox:
        return self._do(self._client.create_sandbox(spec, **fields))

    def list_sandboxes(self) -> list[Sandbox]:
        return self._do(self._client.list_sandboxes())

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return self._do(self._client.get_sandbox(sandbox_id))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._do(self._client.delete_sandbox(sandbox_id))

    def create_snapshot(
        self, sandbox_id: str, labels: dict[str, str] | None = None, *, ttl_s: int | None = None
    ) -> Snapshot:
        return self._do(self._client.create_snapshot(sandbox_id, labels, ttl_s=ttl_s))

    def list_snapshots(self) -> list[Snapshot]:
        return self._do(self._client.list_snapshots())

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return self._do(self._client.get_snapshot(snapshot_id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._do(self._client.delete_snapshot(snapshot_id))

    def run_in_sandbox(
        self, sandbox_id: str, request: RunRequest | None = None, **fields: Any
    ) -> RunResult:
        return self._do(self._client.run_in_sandbox(sandbox_id, request, **fields))

    def create_context(
        self, sandbox_id: str, spec: ContextSpec | None = None, **fields: Any
    ) -> ContextInfo:
        return self._do(self._client.create_context(sandbox_id, spec, **fields))

    def list_contexts(self, sandbox_id: str) -> list[ContextInfo]:
        return self._do(self._client.list_contexts(sandbox_id))

    def get_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        return self._do(self._client.get_context(sandbox_id, context_id))

    def execute(
        self, sandbox_id: str, context_id: str, code: str, *, timeout_s: float = 30.0
    ) -> ExecutionResult:
        return self._do(self._client.execute(sandbox_id, context_id, code, timeout_s=timeout_s))

    def interrupt_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        return self._do(self._client.interrupt_context(sandbox_id, context_id))

    def restart_context(self, sandbox_id: str, context_id: str) -> ContextInfo:
        return self._do(self._client.restart_context(sandbox_id, context_id))

    def delete_context(self, sandbox_id: str, context_id: str) -> None:
        self._do(self._client.delete_context(sandbox_id, context_id))

    def put_file(self, sandbox_id: str, path: str, data: bytes) -> FileInfo:
        return self._do(self._client.put_file(sandbox_id, path, data))

    def get_file(self, sandbox_id: str, path: str) -> bytes:
        return self._do(self._client.get_file(sandbox_id, path))

    def delete_file(self, sandbox_id: str, path: str) -> None:
        self._do(self._client.delete_file(sandbox_id, path))

    def archive(self, sandbox_id: str) -> bytes:
        return self._do(self._client.archive(sandbox_id))

    def audit(self, after: int = 0, limit: int = 100) -> AuditPage:
        return self._do(self._client.audit(after, limit))

    def metrics(self) -> str:
        return self._do(self._client.metrics())


__all__ = ["Client", "SandboxdError", "SyncClient"]


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`sandboxd ... | head`): stop without a traceback, and
    keep the interpreter's final flush from raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # as if killed by SIGPIPE, like other Unix tools


class OneLineArgumentParser(argparse.ArgumentParser):
    """A command line whose mistakes are one line that says what to do (not a usage block),
    with exit status `usage_status` (a subclass sets its command's; its subcommands inherit)."""

    usage_status = 2

    def error(self, message: str) -> NoReturn:
        self.exit(self.usage_status, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
