"""The tests run in a persistent sandboxd sandbox holding a copy of the repository; coder starts
a sandboxd of its own when none is configured or reachable."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coder.digest import TestDigest, digest
from coder.errors import SandboxError
from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.local_token import local_admin_token
from sandboxd.models import FileIn, Limits
from sandboxd.testing import Daemon, DaemonFailed

UPLOAD_BATCH_BYTES = 12 * 1024 * 1024
# No bytecode caches: an edit within the same second and of the same size as the original
# would otherwise run the stale .pyc (CPython checks mtime in whole seconds, and size).
TEST_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class TestRun:
    digest: TestDigest
    seconds: float


class SandboxSession:
    """One sandbox for one solve: upload the repo, write edits, run the test command."""

    def __init__(self, client: Client, test_command: str, limits: Limits) -> None:
        self.client = client
        self.test_command = test_command
        self.limits = limits
        self.sandbox_id: str | None = None

    async def start(self, files: dict[str, bytes], executable: set[str]) -> None:
        size = sum(len(b) for b in files.values())
        disk = max(self.limits.disk_mib, (size >> 20) * 4 + 64)
        try:
            sandbox = await self.client.create_sandbox(
                language="bash",
                limits=self.limits.model_copy(update={"disk_mib": disk}),
                ttl_s=3600,
            )
            self.sandbox_id = sandbox.id
            batch: list[FileIn] = []
            used = 0
            for path, data in sorted(files.items()):
                batch.append(
                    FileIn(
                        path=path,
                        content=base64.b64encode(data).decode(),
                        encoding="base64",
                        executable=path in executable,
                    )
                )
                used += len(data)
                if used > UPLOAD_BATCH_BYTES:
                    await self._upload(batch)
                    batch, used = [], 0
            if batch:
                await self._upload(batch)
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc

    async def _upload(self, batch: list[FileIn]) -> None:
        assert self.sandbox_id
        result = await self.client.run_in_sandbox(self.sandbox_id, command=["true"], files=batch)
        if result.status != "ok":
            raise SandboxError(f"uploading the repository failed: {result.status}")

    async def write(self, changed: dict[str, str]) -> None:
        assert self.sandbox_id
        try:
            for path, content in changed.items():
                await self.client.put_file(self.sandbox_id, path, content.encode())
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc

    async def run_tests(self) -> TestRun:
        assert self.sandbox_id
        started = time.monotonic()
        try:
            result = await self.client.run_in_sandbox(
                self.sandbox_id,
                command=["bash", "-c", self.test_command],
                limits=self.limits,
                env=TEST_ENV,
            )
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc
        if result.status == "error":
            raise SandboxError(f"sandboxd could not run the tests: {result.message}")
        d = digest(result.exit_code, result.status, result.stdout, result.stderr)
        return TestRun(d, time.monotonic() - started)

    async def close(self) -> None:
        if self.sandbox_id:
            with contextlib.suppress(SandboxdError):
                await self.client.delete_sandbox(self.sandbox_id)


class LocalDaemon:
    """A sandboxd started by coder for one solve (when none is configured or reachable).

    It is the tests' harness (`sandboxd.testing.Daemon`) with coder's own state dir, the host's
    default cgroup parent, and coder's messages: where it started, and on failure the
    daemon's own error."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="coder-sandboxd-", dir="/var/tmp"))
        self.daemon = Daemon(
            self.dir,
            state_dir=self.dir / "state",
            log=self.dir / "sandboxd.log",
            test_cgroup=False,
            token_reader=local_admin_token,
        )
        self.url = self.daemon.url
        self.token = ""

    @property
    def state_dir(self) -> Path:
        return self.daemon.state_dir

    @property
    def log(self) -> Path:
        return self.daemon.log

    def _log_tail(self) -> str:
        """The daemon's own account of its failure: its one-line error when it printed one,
        else the last lines of its log."""
        try:
            lines = [x.strip() for x in self.log.read_text(errors="replace").splitlines()]
        except OSError:
            return "it left no log"
        lines = [x for x in lines if x]
        errors = [x for x in lines if x.startswith("sandboxd: error:")]
        if errors:
            return errors[-1]
        return " / ".join(lines[-3:]) or "it printed nothing"

    async def start(
        self, timeout_s: float = 30.0, say: Callable[[str], None] | None = None
    ) -> None:
        if os.geteuid() != 0:
            raise SandboxError(
                "sandboxd is not reachable and coder cannot start one "
                "(sandboxd needs root); start it or set SANDBOXD_URL"
            )
        await asyncio.to_thread(self.dir.chmod, 0o711)
        if say is not None:
            say(f"starting one for this solve on {self.url} (state dir {self.state_dir})")
        try:
            await asyncio.to_thread(self.daemon.start, timeout_s=timeout_s)
        except DaemonFailed as exc:
            if exc.returncode is not None:
                raise SandboxError(
                    f"the sandboxd that coder started on {self.url} exited with status "
                    f"{exc.returncode}: {self._log_tail()}"
                ) from None
            raise SandboxError(
                f"the sandboxd that coder started on {self.url} was not ready after "
                f"{timeout_s:.0f}s: {self._log_tail()}"
            ) from None
        self.token = self.daemon.token

    async def stop(self) -> None:
        await asyncio.to_thread(self.daemon.stop, signal.SIGTERM, 20.0)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
