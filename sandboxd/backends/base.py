"""The interface every sandbox backend implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from sandboxd.models import Capabilities, RunRequest, RunResult
from sandboxd.settings import Settings
from sandboxd.workspace import Workspace


@dataclass(frozen=True)
class SandboxMount:
    """A persistent sandbox's workspace, handed to a run: its work tree and its owner uid."""

    work_dir: Path
    uid: int


class Backend(ABC):
    """Runs one request in a fresh, isolated sandbox and reports what happened.

    `run` never raises for anything the untrusted code did: timeouts, limits and crashes are
    statuses of the returned `RunResult`. It raises `SandboxdError` subclasses only for bad
    requests and for a host that cannot provide the isolation (and then runs nothing).
    """

    name: ClassVar[str]

    @abstractmethod
    async def start(self) -> None:
        """Check the host, create what runs need, and reap what a crashed daemon left behind."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every run in flight and release what `start` created."""

    @abstractmethod
    async def run(
        self, run_id: str, request: RunRequest, *, sandbox: SandboxMount | None = None
    ) -> RunResult:
        """Run `request` (limits already checked against the daemon's caps), in a fresh
        workspace, or over `sandbox`'s persistent one."""

    @abstractmethod
    def version(self) -> str:
        """Version of the isolation tool."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend enforces on this host."""


async def collect_files(
    result: RunResult, ws: Workspace, request: RunRequest, settings: Settings
) -> None:
    """Put the files the request asked to collect into `result`, noting what was skipped."""
    if not request.collect:
        return
    got = await asyncio.to_thread(
        ws.collect,
        request.collect,
        max_bytes=settings.max_collect_bytes,
        max_files=settings.max_collect_files,
    )
    result.files = got.files
    if got.skipped:
        note = "not collected: " + "; ".join(got.skipped[:10])
        result.message = f"{result.message}; {note}" if result.message else note
