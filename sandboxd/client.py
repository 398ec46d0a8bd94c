"""Python client of the daemon: an async `Client` and a blocking `SyncClient` facade.

Both return the wire models of `sandboxd.models` and raise the `sandboxd.errors` classes that
the daemon's error codes map to.
"""

from __future__ import annotations

import asyncio
import json
import os
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from sandboxd.errors import DaemonUnreachable, SandboxdError, error_from_wire
from sandboxd.models import Health, Info, RunRequest, RunResult
from sandboxd.policy import validation_error

DEFAULT_URL = "http://127.0.0.1:8765"
#: Time allowed on top of the run's own wall time limit for the HTTP exchange.
HTTP_SLACK_S = 60.0
M = TypeVar("M", bound=BaseModel)


def default_url() -> str:
    return os.environ.get("SANDBOXD_URL", DEFAULT_URL)


class Client:
    """Async client. Use as `async with Client() as c: result = await c.run(code=...)`."""

    def __init__(self, url: str | None = None, *, connect_timeout_s: float = 10.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s)
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: str | None = None,
        timeout_s: float | None = None,
    ) -> M:
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            async with self._http().request(
                method,
                self.url + path,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=self._connect_timeout_s),
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "1")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DaemonUnreachable(f"cannot reach sandboxd at {self.url}: {exc}") from exc
        try:
            data: Any = json.loads(raw)
        except ValueError:
            raise DaemonUnreachable(
                f"sandboxd at {self.url} answered HTTP {status} with a non-JSON body"
            ) from None
        if status >= 400:
            retry = int(retry_after) if retry_after.isdigit() else 1
            raise error_from_wire(status, data, retry_after_s=retry)
        return model.model_validate(data)

    async def health(self) -> Health:
        return await self._call("GET", "/healthz", Health, timeout_s=HTTP_SLACK_S)

    async def info(self) -> Info:
        return await self._call("GET", "/v1/info", Info, timeout_s=HTTP_SLACK_S)

    async def run(self, request: RunRequest | None = None, **fields: Any) -> RunResult:
        """Run code once. Pass a `RunRequest`, or its fields as keywords."""
        if request is None:
            try:
                request = RunRequest.model_validate(fields)
            except ValidationError as exc:
                raise validation_error(exc) from None
        req = request
        body = req.model_dump_json(exclude_defaults=True)
        timeout = req.limits.wall_time_s + HTTP_SLACK_S
        return await self._call("POST", "/v1/runs", RunResult, body=body, timeout_s=timeout)


class SyncClient:
    """Blocking facade over `Client` (for scripts; not for use inside a running event loop)."""

    def __init__(self, url: str | None = None, *, connect_timeout_s: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client(url, connect_timeout_s=connect_timeout_s)
        self.url = self._client.url

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def health(self) -> Health:
        return self._loop.run_until_complete(self._client.health())

    def info(self) -> Info:
        return self._loop.run_until_complete(self._client.info())

    def run(self, request: RunRequest | None = None, **fields: Any) -> RunResult:
        return self._loop.run_until_complete(self._client.run(request, **fields))


__all__ = ["Client", "SandboxdError", "SyncClient"]
