"""A FAKE backend, for the unit tier only: it never runs a program.

Everything above the backend seam (HTTP, auth, audit, policy, the run manager, streaming and
cancel) can then be tested in-process, without root, nsjail or Docker, the way SWE-ReX tests
with its dummy deployment and httpx with its MockTransport. It isolates nothing and must
never serve real requests: `make_app` only uses it when a test hands it in
(`make_app(settings, backends={"nsjail": FakeBackend()})`; the settings cannot name it), and
results name it (`backend: "fake"`) so that no one mistakes its answers for a sandbox's.

A run's "program" is a small script, never evaluated as code. It is the request's `code`,
or, with `command`, the text of the request file that the command's last argument names
(nothing: an empty script). One statement per line; blank lines and `#` comments are skipped:

    print(LITERAL)    str(LITERAL) and a newline on stdout (LITERAL: a Python literal,
                      read by `ast.literal_eval`)
    stderr(LITERAL)   the same on stderr
    echo_stdin        the request's stdin, as given, on stdout
    flood N           N bytes of "x" on stdout (over `limits.output_bytes`: `output_limit`)
    sleep S           wait S seconds; passing `limits.wall_time_s` (summed over the run's
                      sleeps) ends the run as `timeout`; a cancel, here or before any
                      statement, as `cancelled`
    exit N            stop; exit code N (0: `ok`, else `failed`)
    status NAME       stop with any other status (cpu_limit, memory_limit, killed, error)
    raise CODE        raise the SandboxdError of wire code CODE (e.g. backend_unavailable,
                      overloaded): a backend that refuses, and runs nothing

Anything else stops the run as `failed`, exit code 2, saying so on stderr. The end of the
script is `exit 0`. Files asked for in `collect` are those of the request's `files` that
match. Every call is recorded in `calls`; `started`/`closed` say whether the daemon started
and closed it. `on_output` gets each chunk; `on_start` is the run manager's to call.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import fnmatch
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

from sandboxd.backends.base import Backend, CacheMount, RunControl, SandboxMount
from sandboxd.backends.host.output import StreamCapture
from sandboxd.errors import WIRE_CODES, error_from_wire
from sandboxd.models import (
    Capabilities,
    CollectedFile,
    Limits,
    RunRequest,
    RunResult,
    RunStatus,
    Usage,
)

FAKE_VERSION = "fake-1"
CANCELLED = "cancelled (DELETE /v1/runs/{id}); the tree was killed"  # as the real ones say
#: `status NAME` may end a run with these; the others have statements of their own.
SCRIPTED_STATUSES: dict[str, RunStatus] = {
    s: s for s in get_args(RunStatus) if s not in ("ok", "failed", "timeout", "cancelled")
}


@dataclass(frozen=True)
class FakeCall:
    """One `run` the fake was asked for."""

    run_id: str
    request: RunRequest
    sandbox: SandboxMount | None


class _Stop(Exception):
    def __init__(self, status: RunStatus, exit_code: int | None, message: str | None) -> None:
        super().__init__(status)
        self.status, self.exit_code, self.message = status, exit_code, message


class FakeBackend(Backend):
    """Answers runs from their script (see the module docstring); runs nothing."""

    name: ClassVar[str] = "fake"

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.calls: list[FakeCall] = []
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def version(self) -> str:
        return FAKE_VERSION

    def capabilities(self) -> Capabilities:
        return Capabilities(
            languages=["python", "bash", "node"],
            network_modes=["none"],
            cgroup_version=0,
            limits_enforced=[],  # it runs nothing, so it enforces nothing
            seccomp=False,
        )

    async def run(
        self,
        run_id: str,
        request: RunRequest,
        *,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
        cache: CacheMount | None = None,
    ) -> RunResult:
        self.calls.append(FakeCall(run_id, request, sandbox))
        control = control or RunControl()
        out, err = control.captures(request.limits.output_bytes)
        began = time.monotonic()
        status: RunStatus = "ok"
        exit_code: int | None = 0
        message: str | None = None
        try:
            await self._play(request, control, out, err)
        except _Stop as stop:
            status, exit_code, message = stop.status, stop.exit_code, stop.message
        return RunResult(
            id=run_id,
            status=status,
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            usage=Usage(wall_time_s=round(time.monotonic() - began, 4)),
            files=self._collect(request),
            message=message,
            backend=self.name,
            limits=request.limits,
        )

    @staticmethod
    def script(request: RunRequest) -> str:
        if request.command is None:
            return request.code
        named = request.command[-1]
        return next((f.content for f in request.files if f.path == named), "")

    async def _play(
        self, request: RunRequest, control: RunControl, out: StreamCapture, err: StreamCapture
    ) -> None:
        limits = request.limits
        slept = 0.0
        for raw in self.script(request).splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if control.cancel.is_set():
                raise _Stop("cancelled", None, CANCELLED)
            word, _, arg = line.partition(" ")
            if (call := _call(line)) is not None:
                target, value = call
                self._emit(out if target == "print" else err, f"{value}\n".encode(), limits)
            elif line == "echo_stdin":
                self._emit(out, (request.stdin or "").encode(), limits)
            elif word == "flood" and arg.isdigit():
                self._emit(out, b"x" * int(arg), limits)
            elif word == "sleep" and (want := _seconds(arg)) is not None:
                step = min(want, limits.wall_time_s - slept)
                try:
                    await asyncio.wait_for(control.cancel.wait(), step)
                except TimeoutError:
                    slept += step
                    if step < want:
                        msg = f"wall time limit of {limits.wall_time_s}s reached"
                        raise _Stop("timeout", None, msg) from None
                else:
                    raise _Stop("cancelled", None, CANCELLED)
            elif word == "exit" and arg.removeprefix("-").isdigit():
                code = int(arg)
                raise _Stop("ok" if code == 0 else "failed", code, None)
            elif word == "status" and arg in SCRIPTED_STATUSES:
                raise _Stop(SCRIPTED_STATUSES[arg], None, f"fake: scripted status {arg}")
            elif word == "raise" and arg in WIRE_CODES:
                body = {"error": {"code": arg, "message": f"fake: scripted {arg}", "field": None}}
                raise error_from_wire(WIRE_CODES[arg].http_status, body)
            else:
                err.feed(f"fake: not a statement of its script: {line[:200]}\n".encode())
                raise _Stop("failed", 2, None)

    @staticmethod
    def _emit(capture: StreamCapture, data: bytes, limits: Limits) -> None:
        if capture.feed(data):
            msg = f"output over {limits.output_bytes} bytes on a stream; run killed"
            raise _Stop("output_limit", None, msg)

    @staticmethod
    def _collect(request: RunRequest) -> list[CollectedFile]:
        found = []
        for f in request.files:
            if any(fnmatch.fnmatchcase(f.path, pattern) for pattern in request.collect):
                data = base64.b64decode(f.content) if f.encoding == "base64" else f.content.encode()
                encoded = base64.b64encode(data).decode()
                found.append(CollectedFile(path=f.path, content=encoded, size=len(data)))
        return found


def _call(line: str) -> tuple[str, object] | None:
    """`print(LITERAL)` / `stderr(LITERAL)` as (which, value); None if it is neither."""
    name, paren, rest = line.partition("(")
    if name not in ("print", "stderr") or not paren or not rest.endswith(")"):
        return None
    try:
        return name, ast.literal_eval(rest[:-1].strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and math.isfinite(value) else None
