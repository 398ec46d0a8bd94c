"""The seam between the daemon and its isolation technologies: what every backend implements
(`Backend`) and what a run is handed (`RunControl`, `SandboxMount`). Nothing else lives here:
the mechanics backends share are in `sandboxd.backends.host`."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sandboxd.backends.host.kernel import Kernel
from sandboxd.backends.host.output import StreamCapture
from sandboxd.errors import InvalidRequest
from sandboxd.models import Capabilities, ContextSpec, Limits, PoolStats, RunRequest, RunResult


@dataclass
class RunControl:
    """A run in flight, seen from the daemon: its output as it comes, and a way to stop it.

    `on_start(run_id)` is called once the run has its id; `on_output(stream, chunk)` gets
    the stored part of stdout/stderr ("stdout" | "stderr"), on the event loop. Setting
    `cancel` kills the run's tree; its status is then `cancelled`.
    """

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    on_output: Callable[[str, bytes], None] | None = None
    on_start: Callable[[str], None] | None = None

    def capture(self, stream: str, limit: int, *, threadsafe: bool = False) -> StreamCapture:
        """A capture of `stream` that reports to `on_output` (from any thread if asked)."""
        sink = self.on_output
        if sink is None:
            return StreamCapture(limit)
        if threadsafe:
            loop = asyncio.get_running_loop()

            def report(chunk: bytes) -> None:
                loop.call_soon_threadsafe(sink, stream, chunk)

            return StreamCapture(limit, report)
        return StreamCapture(limit, lambda b: sink(stream, b))

    def captures(
        self, limit: int, *, threadsafe: bool = False
    ) -> tuple[StreamCapture, StreamCapture]:
        """stdout's and stderr's captures, each keeping `limit` bytes."""
        return (
            self.capture("stdout", limit, threadsafe=threadsafe),
            self.capture("stderr", limit, threadsafe=threadsafe),
        )


@dataclass(frozen=True)
class SandboxMount:
    """A persistent sandbox's workspace, handed to a run: its work tree and its owner uid."""

    work_dir: Path
    uid: int


@dataclass(frozen=True)
class CacheMount:
    """A tenant's download cache, handed to a run that asked for it: the tree to mount at
    `/cache` and the host uid its files belong to on disk (the run sees them as its own)."""

    path: Path
    disk_uid: int

    def astuple(self) -> tuple[Path, int]:
        return (self.path, self.disk_uid)


class Backend(ABC):
    """Runs one request in a fresh, isolated sandbox and reports what happened.

    `run` never raises for anything the untrusted code did: timeouts, limits and crashes are
    statuses of the returned `RunResult`. It raises `SandboxdError` subclasses only for bad
    requests and for a host that cannot provide the isolation (and then runs nothing).
    """

    name: ClassVar[str]  # its type, as results and metrics name it
    runs_images: ClassVar[bool] = False  # True: requests may name an `image`

    @abstractmethod
    async def start(self) -> None:
        """Check the host, create what runs need, and reap what a crashed daemon left behind."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every run in flight and release what `start` created."""

    @abstractmethod
    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
        cache: CacheMount | None = None,
    ) -> RunResult:
        """Run `request` (limits already checked against the daemon's caps), in a fresh
        workspace, or over `sandbox`'s persistent one; `control` streams and cancels; `cache`
        (given exactly when the request asks for its download cache) is mounted at /cache."""

    @abstractmethod
    def version(self) -> str:
        """Version of the isolation tool."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend enforces on this host."""

    def pool_stats(self) -> dict[str, PoolStats]:
        """Warm pools by profile (none unless the backend keeps any)."""
        return {}

    async def start_kernel(
        self, context_id: str, sandbox: SandboxMount, limits: Limits, spec: ContextSpec
    ) -> Kernel:
        """Start an interpreter context's kernel over `sandbox`'s workspace, within `limits`
        for the whole of it; ready to execute when returned. Not every backend has them: a
        request for one where there are none is the caller's to change (400)."""
        raise InvalidRequest(
            f"sandboxes on the {self.name} backend have no interpreter contexts (yet): create "
            "the sandbox with backend nsjail",
            field="backend",
        )
