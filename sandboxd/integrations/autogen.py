"""`SandboxdCodeExecutor`: AutoGen's `CodeExecutor` on sandboxd (`pip install 'sandboxd[autogen]'`).

A drop-in for `DockerCommandLineCodeExecutor` / `LocalCommandLineCodeExecutor`, keeping their
semantics: the blocks run in order and stop at the first that fails; each is written to a file
(`tmp_code_<sha256>.<ext>`, or the name of a `# filename:` first line) that the run executes;
the result has `exit_code`, `output` (stderr then stdout of each block, as the local executor
gives them) and `code_file` (the first block's file: a path inside the sandbox); a timeout is
exit code 124 with "Timeout" appended. Unlike them, every block runs in a sandboxd jail or
container with memory, pids, CPU, disk and network limits (constructor arguments), as a uid
that is not root, and nothing runs on the caller's machine.

The executor holds one sandbox from `start()` to `stop()`, so files persist between blocks and
calls as in AutoGen's `work_dir` (processes do not). With `keep_files=False` each block is a
run of its own in a fresh sandbox instead, served from the daemon's warm pools (faster; nothing
is kept between blocks). With `keep_state=True`, python blocks run
in an interpreter context of that sandbox instead (variables and imports persist between
blocks, as with AutoGen's Jupyter executor); `restart()` then clears them.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from dataclasses import dataclass
from typing import Any, Self

try:
    from autogen_core import CancellationToken, Component
    from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
except ImportError as missing:  # an optional extra
    raise ImportError(
        f"{missing}: SandboxdCodeExecutor needs AutoGen: pip install 'sandboxd[autogen]'"
    ) from missing
from pydantic import BaseModel, Field

from sandboxd.client import Client
from sandboxd.errors import DaemonUnreachable
from sandboxd.models import (
    ExecutionResult,
    FileIn,
    Limits,
    NetworkPolicy,
    RunRequest,
    RunResult,
    normalise_relative_path,
)

#: AutoGen's exit code for a timeout (the local and Docker executors both say 124).
TIMEOUT_EXIT = 124
#: What AutoGen's local executor says for a cancelled block.
CANCELLED_EXIT = 125
#: The other limits, as `sandboxd run` reports them.
EXIT_BY_STATUS = {"output_limit": 121, "memory_limit": 122, "cpu_limit": 123, "error": 125}
#: Block language (lower case) -> (file extension, interpreter in the sandbox).
LANGUAGES: dict[str, tuple[str, str]] = {
    "python": ("py", "python3"),
    "py": ("py", "python3"),
    "python3": ("py", "python3"),
    "bash": ("bash", "bash"),
    "sh": ("sh", "sh"),
    "shell": ("sh", "sh"),
    "javascript": ("js", "node"),
    "js": ("js", "node"),
    "node": ("js", "node"),
}
WORKSPACE = "/workspace"


@dataclass
class SandboxdCodeResult(CodeResult):
    """AutoGen's `CommandLineCodeResult` (exit_code, output, code_file) plus sandboxd's own
    `status` of the last block run (`ok`, `failed`, `timeout`, `memory_limit`, ...)."""

    code_file: str | None
    status: str = "ok"


def _filename(code: str, ext: str) -> str:
    """AutoGen's rule: the `# filename:` of the first line, else `tmp_code_<sha256>.<ext>`."""
    first = code.split("\n", 1)[0]
    if first.startswith("# filename:"):
        return normalise_relative_path(first.split(":", 1)[1].strip())
    return f"tmp_code_{hashlib.sha256(code.encode()).hexdigest()}.{ext}"


def _exit_code(result: RunResult) -> int:
    if result.status == "timeout":
        return TIMEOUT_EXIT
    if result.status == "cancelled":
        return CANCELLED_EXIT
    if result.status in EXIT_BY_STATUS:
        return EXIT_BY_STATUS[result.status]
    if result.status == "killed" and result.signal:
        try:
            return 128 + int(signal.Signals[result.signal])
        except KeyError:
            return 128
    return result.exit_code if result.exit_code is not None else 1


def _run_output(result: RunResult) -> str:
    out = result.stderr + result.stdout
    if result.status == "timeout":
        return out + "\nTimeout"
    if result.status == "cancelled":
        return out + "\nCancelled"
    if result.status not in ("ok", "failed"):
        return out + f"\n{result.status}" + (f": {result.message}" if result.message else "")
    return out


def _execution_exit_and_output(result: ExecutionResult) -> tuple[int, str]:
    parts = [result.stderr, result.stdout]
    parts += [r.data + "\n" for r in result.results if r.mime == "text/plain" and r.is_result]
    if result.error is not None:
        parts.append(
            "\n".join(result.error.traceback or [f"{result.error.name}: {result.error.value}"])
        )
    out = "".join(parts)
    codes = {"ok": 0, "error": 1, "timeout": TIMEOUT_EXIT, "interrupted": CANCELLED_EXIT}
    code = codes.get(result.status, EXIT_BY_STATUS.get(result.status, 137))
    if result.status == "timeout":
        out += "\nTimeout"
    elif result.status not in ("ok", "error"):
        out += f"\n{result.status}" + (f": {result.message}" if result.message else "")
    return code, out


def _model(kind: type[BaseModel], value: BaseModel | dict[str, Any] | None) -> Any:
    return kind.model_validate(value.model_dump() if isinstance(value, BaseModel) else value or {})


class SandboxdCodeExecutorConfig(BaseModel):
    """What `dump_component()` keeps of an executor (never its token: a loaded one finds its
    own, as the CLI does)."""

    url: str | None = None
    timeout: int = 60
    limits: Limits = Field(default_factory=Limits)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    env: dict[str, str] = Field(default_factory=dict)
    backend: str | None = None
    image: str | None = None
    keep_files: bool = True
    keep_state: bool = False


class SandboxdCodeExecutor(CodeExecutor, Component[SandboxdCodeExecutorConfig]):
    """Runs AutoGen code blocks (python, bash/sh, node) in a sandboxd sandbox.

    `url`/`token`: the daemon (default: `SANDBOXD_URL`, `SANDBOXD_TOKEN`, else the local
    daemon and its admin token, as the CLI finds them). `timeout`: seconds per block, as in
    AutoGen. `limits` (`sandboxd.models.Limits` or its fields: memory_mib, pids, cpu_time_s,
    disk_mib, ...) and `network` (`{"mode": "allowlist", "allow": ["pypi.example.com"]}`;
    default none) apply to every block. `backend`/`image`: which isolation runs them.
    `keep_files=False`: every block in a fresh sandbox (warm pools; nothing kept between
    blocks). `keep_state`: python blocks run in an interpreter context whose variables persist.
    """

    SUPPORTED_LANGUAGES = sorted(LANGUAGES)
    component_config_schema = SandboxdCodeExecutorConfig
    component_provider_override = "sandboxd.integrations.autogen.SandboxdCodeExecutor"

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: int = 60,
        limits: Limits | dict[str, Any] | None = None,
        network: NetworkPolicy | dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        backend: str | None = None,
        image: str | None = None,
        keep_files: bool = True,
        keep_state: bool = False,
    ) -> None:
        if timeout < 1:
            raise ValueError("Timeout must be greater than or equal to 1.")
        self._url, self._token, self._timeout = url, token, timeout
        given = _model(Limits, limits)
        # AutoGen's timeout is wall time; CPU time may use as much unless a limit says less
        cpu = given.cpu_time_s if "cpu_time_s" in given.model_fields_set else float(timeout)
        self._limits: Limits = given.model_copy(
            update={"wall_time_s": float(timeout), "cpu_time_s": cpu}
        )
        self._network: NetworkPolicy = _model(NetworkPolicy, network)
        self._env = dict(env or {})
        self._backend, self._image = backend, image
        if keep_state and not keep_files:
            raise ValueError("keep_state needs keep_files: the interpreter lives in the sandbox")
        self._keep_files, self._keep_state = keep_files, keep_state
        self._client: Client | None = None
        self._sandbox_id: str | None = None
        self._context_id: str | None = None

    def _to_config(self) -> SandboxdCodeExecutorConfig:
        return SandboxdCodeExecutorConfig(
            url=self._url,
            timeout=self._timeout,
            limits=self._limits,
            network=self._network,
            env=self._env,
            backend=self._backend,
            image=self._image,
            keep_files=self._keep_files,
            keep_state=self._keep_state,
        )

    @classmethod
    def _from_config(cls, config: SandboxdCodeExecutorConfig) -> Self:
        return cls(
            config.url,
            timeout=config.timeout,
            limits=config.limits,
            network=config.network,
            env=config.env,
            backend=config.backend,
            image=config.image,
            keep_files=config.keep_files,
            keep_state=config.keep_state,
        )

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def sandbox_id(self) -> str | None:
        """The sandbox the blocks run in (its files: `sandboxd.client.Client.get_file`); None
        with `keep_files=False`."""
        return self._sandbox_id

    async def start(self) -> None:
        if self._client is not None:
            return
        client = Client(self._url, token=self._token)
        if not self._keep_files:
            self._client = client
            return
        try:
            spec: dict[str, Any] = {"limits": self._limits, "network": self._network}
            if self._backend:
                spec["backend"] = self._backend
            if self._image:
                spec["image"] = self._image
            sandbox = await client.create_sandbox(**spec)
        except BaseException:
            await client.close()
            raise
        self._client, self._sandbox_id = client, sandbox.id

    async def stop(self) -> None:
        client, sandbox_id = self._client, self._sandbox_id
        self._client = self._sandbox_id = self._context_id = None
        if client is None:
            return
        try:
            if sandbox_id is not None:
                await client.delete_sandbox(sandbox_id)
        finally:
            await client.close()

    async def restart(self) -> None:
        """Clear the interpreter's state (with `keep_state`); the workspace's files stay."""
        if self._client is not None and self._sandbox_id and self._context_id:
            await self._client.restart_context(self._sandbox_id, self._context_id)

    def _started(self) -> tuple[Client, str | None]:
        if self._client is None or (self._keep_files and self._sandbox_id is None):
            raise ValueError(
                "SandboxdCodeExecutor is not started: call start(), or use it as an async "
                "context manager"
            )
        return self._client, self._sandbox_id

    async def execute_code_blocks(
        self, code_blocks: list[CodeBlock], cancellation_token: CancellationToken
    ) -> SandboxdCodeResult:
        client, sandbox_id = self._started()
        output, exit_code, status, files = "", 0, "ok", []
        for block in code_blocks:
            lang = block.language.lower()
            if lang not in LANGUAGES:
                output += f"\nunknown language {lang}"
                exit_code, status = 1, "failed"
                break
            if self._keep_state and sandbox_id and LANGUAGES[lang][1] == "python3":
                exit_code, text, status = await self._in_context(
                    client, sandbox_id, block.code, cancellation_token
                )
                output += text
            else:
                ext, interpreter = LANGUAGES[lang]
                try:
                    filename = _filename(block.code, ext)
                except ValueError:
                    return SandboxdCodeResult(1, "Filename is not in the workspace", None, "failed")
                files.append(f"{WORKSPACE}/{filename}")
                request = RunRequest(
                    files=[FileIn(path=filename, content=block.code)],
                    command=[interpreter, filename],
                    limits=self._limits,
                    network=self._network,
                    env=self._env,
                    **({} if self._keep_files else self._isolation()),
                )
                result = await self._run(client, sandbox_id, request, cancellation_token)
                exit_code, status = _exit_code(result), result.status
                output += _run_output(result)
            if exit_code != 0:
                break
        return SandboxdCodeResult(exit_code, output, files[0] if files else None, status)

    def _isolation(self) -> dict[str, str]:
        """A fresh run's backend and image (a sandbox has its own)."""
        chosen = {"backend": self._backend, "image": self._image}
        return {key: value for key, value in chosen.items() if value}

    async def _run(
        self, client: Client, sandbox_id: str | None, request: RunRequest, token: CancellationToken
    ) -> RunResult:
        """The run, streamed: cancelling the token closes the stream, which cancels the run."""

        async def streamed() -> RunResult:
            async for event in client.stream_run(request, sandbox_id=sandbox_id):
                if event.event == "exit" and event.result is not None:
                    return event.result
                if event.event == "error":
                    detail = (event.error or {}).get("message", "the run could not be done")
                    raise DaemonUnreachable(f"sandboxd: {detail}")
            raise DaemonUnreachable("sandboxd closed the stream before the run's result")

        task = asyncio.ensure_future(streamed())
        token.link_future(task)
        try:
            return await task
        except asyncio.CancelledError:
            if not token.is_cancelled():
                raise
            return RunResult(id="", status="cancelled", limits=request.limits)

    async def _in_context(
        self, client: Client, sandbox_id: str, code: str, token: CancellationToken
    ) -> tuple[int, str, str]:
        if self._context_id is None:
            self._context_id = (await client.create_context(sandbox_id)).id
        task = asyncio.ensure_future(
            client.execute(sandbox_id, self._context_id, code, timeout_s=self._timeout)
        )
        token.link_future(task)
        try:
            result = await task
        except asyncio.CancelledError:
            if not token.is_cancelled():
                raise
            await client.interrupt_context(sandbox_id, self._context_id)
            return CANCELLED_EXIT, "\nCancelled", "cancelled"
        code_, out = _execution_exit_and_output(result)
        return code_, out, result.status


__all__ = ["SandboxdCodeExecutor", "SandboxdCodeExecutorConfig", "SandboxdCodeResult"]
