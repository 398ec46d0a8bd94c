"""The tests run in a persistent sandboxd sandbox holding a copy of the repository; coder starts
a sandboxd of its own when none is configured or reachable.

The repository reaches the sandbox as the `files` of runs, and the daemon refuses a request
over either of its caps: a number of files (`files: List should have at most 1000 items`) and a
body size (`max_request_bytes`). Batching by bytes alone made every repository of more than
1000 files unsolvable, so each batch stays under both: the caps the daemon reports in
`GET /v1/info` when it reports them, else its documented defaults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coder.digest import TestDigest, digest
from coder.errors import SandboxError
from sandboxd.client import Client
from sandboxd.errors import InvalidRequest, SandboxdError
from sandboxd.local_token import local_admin_token
from sandboxd.models import (
    MAX_FILES,
    FileIn,
    Info,
    Limits,
    NetworkPolicy,
    RunRequest,
    SandboxCreate,
)
from sandboxd.testing import Daemon, DaemonFailed

#: The daemon's default `max_request_bytes` (README "Settings"), for a daemon that says nothing.
DEFAULT_REQUEST_BYTES = 32 * 1024 * 1024
#: Never more than this per request even when the daemon allows more: one slow request is
#: worse than several quick ones, and a retry of a small one costs little.
MAX_BATCH_BYTES = 12 * 1024 * 1024
#: Room for the rest of the request (command, limits, JSON punctuation).
SLACK_BYTES = 64 * 1024
#: JSON around one file besides its path and content: keys, encoding, executable flag.
PER_FILE_BYTES = 96


@dataclass(frozen=True)
class Caps:
    """What one upload request may hold."""

    max_files: int = MAX_FILES
    max_bytes: int = MAX_BATCH_BYTES

    @classmethod
    def from_info(cls, info: Info | None) -> Caps:
        """The caps of the daemon that answered `info` (None: it did not answer)."""
        request_bytes = info.max_request_bytes if info is not None else DEFAULT_REQUEST_BYTES
        files = info.max_files_per_request if info is not None else MAX_FILES
        return cls(
            max_files=max(1, min(files, MAX_FILES)),
            max_bytes=max(1024, min(MAX_BATCH_BYTES, request_bytes - SLACK_BYTES)),
        )


def wire_size(path: str, data: bytes) -> int:
    """Bytes one file adds to a request body: base64 content, its path, the JSON around it."""
    return 4 * ((len(data) + 2) // 3) + len(path.encode()) * 2 + PER_FILE_BYTES


def batches(files: dict[str, bytes], executable: set[str], caps: Caps) -> Iterator[list[FileIn]]:
    """The files as batches of FileIn, in path order, each under both caps. A file too large
    for any batch still goes alone (the daemon then says why it refuses it)."""
    batch: list[FileIn] = []
    used = 0
    for path, data in sorted(files.items()):
        size = wire_size(path, data)
        if batch and (len(batch) >= caps.max_files or used + size > caps.max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(
            FileIn(
                path=path,
                content=base64.b64encode(data).decode(),
                encoding="base64",
                executable=path in executable,
            )
        )
        used += size
    if batch:
        yield batch


# No bytecode caches: an edit within the same second and of the same size as the original
# would otherwise run the stale .pyc (CPython checks mtime in whole seconds, and size).
TEST_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}
#: The virtual environment a setup made inside the workspace (coder.setup), first on PATH for
#: the tests when it is there.
VENV = ".coder-venv"
WITH_VENV = (
    f'if [ -x {VENV}/bin/python ]; then export VIRTUAL_ENV="$PWD/{VENV}" '
    f'PATH="$PWD/{VENV}/bin:$PATH"; fi\n'
)


@dataclass
class TestRun:
    digest: TestDigest
    seconds: float
    #: stdout and stderr as they came (hostile: coder.preflight makes them printable).
    output: str = ""


@dataclass
class StepRun:
    """A setup step's run in the sandbox."""

    exit_code: int | None
    status: str
    output: str
    seconds: float
    message: str = ""


class SandboxSession:
    """One sandbox for one solve: upload the repo, write edits, run the test command."""

    def __init__(self, client: Client, test_command: str, limits: Limits) -> None:
        self.client = client
        self.test_command = test_command
        self.limits = limits
        self.sandbox_id: str | None = None
        #: False once the daemon refused this tenant a download cache: asked no more.
        self.download_cache = True

    async def start(
        self,
        files: dict[str, bytes],
        executable: set[str],
        *,
        extra_disk_mib: int = 0,
        from_snapshot: str | None = None,
    ) -> None:
        """Create the sandbox and upload `files`; `extra_disk_mib` is room for a setup."""
        await self.create(files, extra_disk_mib=extra_disk_mib, from_snapshot=from_snapshot)
        await self.upload(files, executable)

    async def create(
        self, files: dict[str, bytes], *, extra_disk_mib: int = 0, from_snapshot: str | None = None
    ) -> None:
        """Create the sandbox (a fork of `from_snapshot` when given), with room for `files`."""
        size = sum(len(b) for b in files.values()) + 4096 * len(files)  # a block per file
        disk = max(self.limits.disk_mib, (size >> 20) * 4 + 64) + extra_disk_mib
        spec = SandboxCreate(
            language="bash",
            limits=self.limits.model_copy(update={"disk_mib": disk}),
            ttl_s=3600,
        )
        if from_snapshot:
            spec.from_snapshot = from_snapshot  # set: sent only when given
        try:
            sandbox = await self.client.create_sandbox(spec)
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc
        self.sandbox_id = sandbox.id

    async def upload(self, files: dict[str, bytes], executable: set[str]) -> None:
        """Upload `files` into the workspace, in batches under the daemon's caps."""
        try:
            caps = Caps.from_info(await self._info())
            for batch in batches(files, executable, caps):
                await self._upload(batch)
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc

    async def _info(self) -> Info | None:
        """The daemon's caps, if it tells them (an older or stricter one may not)."""
        try:
            return await self.client.info()
        except SandboxdError:
            return None

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
                command=["bash", "-c", WITH_VENV + self.test_command],
                limits=self.limits,
                env=TEST_ENV,
            )
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc
        if result.status == "error":
            raise SandboxError(f"sandboxd could not run the tests: {result.message}")
        d = digest(result.exit_code, result.status, result.stdout, result.stderr)
        output = result.stdout + ("\n" + result.stderr if result.stderr.strip() else "")
        return TestRun(d, time.monotonic() - started, output)

    async def run_step(
        self,
        command: str,
        *,
        limits: Limits,
        env: dict[str, str],
        network: NetworkPolicy | None = None,
        download_cache: bool = False,
    ) -> StepRun:
        """One setup step: `command` under bash in the workspace, with `network` for this run
        only (the sandbox itself, and so every test run, keeps the network off), and the
        tenant's download cache if asked and the daemon gives it one (else without)."""
        assert self.sandbox_id
        started = time.monotonic()
        request = RunRequest(
            command=["bash", "-c", command], limits=limits, env={**TEST_ENV, **env}
        )
        if network is not None:
            request.network = network  # set: the sandbox's own policy would apply otherwise
        if download_cache and self.download_cache:
            request.download_cache = True
        try:
            try:
                result = await self.client.run_in_sandbox(self.sandbox_id, request)
            except InvalidRequest as exc:
                if not request.download_cache or exc.field != "download_cache":
                    raise
                # This tenant has no cache there (or the daemon predates it): go without.
                self.download_cache = False
                request.download_cache = False
                request.env = {**request.env, "PIP_NO_CACHE_DIR": "1"}
                result = await self.client.run_in_sandbox(self.sandbox_id, request)
        except SandboxdError as exc:
            raise SandboxError(f"sandboxd: {exc.message}") from exc
        output = result.stdout + ("\n" + result.stderr if result.stderr.strip() else "")
        return StepRun(
            result.exit_code,
            result.status,
            output,
            time.monotonic() - started,
            result.message or "",
        )

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
