"""Wire models shared by the daemon, the Python client and coder.

Units are in field names (`memory_mib`, `wall_time_s`); safe defaults live here, in the schema.
Every request model forbids unknown fields, so a typo is an error instead of a silent default.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

Language = Literal["python", "bash", "node"]
RunStatus = Literal[
    "ok",
    "failed",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "output_limit",
    "killed",
    "cancelled",
    "error",
]

#: A backend's name, as requests give it (`"backend": "docker"`) and the settings key it.
BACKEND_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
#: A snapshot's id, as the daemon makes them.
SNAPSHOT_ID = r"^snap_[0-9a-f]{16}$"
MAIN_FILE: dict[str, str] = {"python": "main.py", "bash": "main.sh", "node": "main.js"}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_PATH_BYTES = 1024
MAX_FILES = 1000
MAX_ARGS = 256
MAX_ENV = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def normalise_relative_path(raw: str) -> str:
    """Normalise a workspace-relative path; refuse absolute paths, `..`, NUL and empty names."""
    if not raw or "\x00" in raw:
        raise ValueError("path must be a non-empty string without NUL bytes")
    if len(raw.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"path is longer than {MAX_PATH_BYTES} bytes")
    if raw.startswith("/"):
        raise ValueError("path must be relative to the workspace, not absolute")
    parts = [p for p in PurePosixPath(raw).parts if p not in (".", "")]
    if any(p == ".." for p in parts):
        raise ValueError("path must not contain '..'")
    if not parts:
        raise ValueError("path names the workspace itself, not a file in it")
    if any(len(p.encode()) > 255 for p in parts):
        raise ValueError("a path component is longer than 255 bytes")
    return "/".join(parts)


class Limits(_Strict):
    """Resource limits of one run. Every field has a safe default; the daemon caps each one."""

    wall_time_s: float = Field(10.0, gt=0, description="Wall-clock time before the run is killed.")
    cpu_time_s: float = Field(10.0, gt=0, description="CPU time of the whole process tree.")
    memory_mib: int = Field(256, ge=16, description="Memory of the whole process tree (cgroup).")
    pids: int = Field(64, ge=1, description="Processes and threads at once (cgroup).")
    output_bytes: int = Field(1_048_576, ge=1, description="Bytes kept per stream; more kills it.")
    file_size_mib: int = Field(16, ge=1, description="Largest file a process may write.")
    disk_mib: int = Field(64, ge=1, description="Workspace plus /tmp (one tmpfs).")


class FileIn(_Strict):
    """A file written into the workspace before the run."""

    path: str = Field(description="Relative path inside the workspace.")
    content: str = ""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    executable: StrictBool = False

    _path = field_validator("path")(normalise_relative_path)

    @model_validator(mode="after")
    def _decodable(self) -> FileIn:
        if self.encoding == "base64":
            try:
                base64.b64decode(self.content, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"content is not valid base64: {exc}") from exc
        return self

    def data(self) -> bytes:
        if self.encoding == "base64":
            return base64.b64decode(self.content, validate=True)
        return self.content.encode()


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


NulFreeStr = Annotated[str, Field(max_length=65536)]


def check_env(value: dict[str, str]) -> dict[str, str]:
    for name, val in value.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment variable name {name[:64]!r} is not valid")
        _no_nul(val)
    return value


class NetworkPolicy(_Strict):
    """Network of a run or sandbox: `none` (loopback only, the default) or `allowlist`
    (an egress proxy that lets through only what `allow` names)."""

    mode: Literal["none", "allowlist"] = "none"
    allow: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Rules: domain, *.domain, IP or CIDR, each with an optional :port "
        "(default 80 and 443); IPv6 with a port as [addr]:port.",
    )

    @model_validator(mode="after")
    def _rules(self) -> NetworkPolicy:
        from sandboxd.netrules import parse_rule

        if self.mode == "none" and self.allow:
            raise ValueError("allow rules need mode 'allowlist'")
        if self.mode == "allowlist" and not self.allow:
            raise ValueError("mode 'allowlist' needs at least one rule in allow")
        for i, rule in enumerate(self.allow):
            try:
                parse_rule(rule)
            except ValueError as exc:
                raise ValueError(f"allow[{i}]: {exc}") from None
        return self


class Connection(BaseModel):
    host: str
    port: int
    reason: str
    bytes_up: int = 0
    bytes_down: int = 0


class NetworkReport(BaseModel):
    """What a run with an allowlist tried to reach."""

    allowed: list[Connection] = Field(default_factory=list)
    denied: list[Connection] = Field(default_factory=list)


class RunRequest(_Strict):
    """`POST /v1/runs`: code to run once in a fresh sandbox."""

    language: Language = "python"
    backend: str | None = Field(
        None,
        pattern=BACKEND_NAME,
        description="Isolation to run in, by the name the daemon gives it (`nsjail`, "
        "`docker`); default: the daemon's default_backend.",
    )
    image: str | None = Field(None, max_length=256, description="Image (Docker backend only).")
    code: str = Field(
        "",
        description="Source of the main file (main.py / main.sh / main.js), written for this "
        "run only. Not with `command` (put the program in `files` then). In a sandbox, refused "
        "if its workspace already holds a file of the main file's name.",
    )
    files: list[FileIn] = Field(default_factory=list, max_length=MAX_FILES)
    command: list[NulFreeStr] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ARGS,
        description="argv run in the workspace instead of the language default; not "
        "together with `code` (which only a language default would run).",
    )
    stdin: str | None = None
    env: dict[str, NulFreeStr] = Field(default_factory=dict, max_length=MAX_ENV)
    limits: Limits = Field(default_factory=Limits)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    download_cache: StrictBool = Field(
        False,
        description="Mount the tenant's download cache at `/cache` (writable, capped by its "
        "`download_cache_mib`, shared by the tenant's runs that ask for it and by no other "
        "tenant's) with `XDG_CACHE_HOME=/cache` and `PIP_CACHE_DIR=/cache/pip` unless `env` "
        "sets them: what one install fetched, the next finds there.",
    )
    collect: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Glob patterns of workspace files returned after the run.",
    )

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and info.data.get("code"):
            raise ValueError(
                "`code` and `command` exclude each other: `command` never runs the main file; "
                "send the program in `files` and name it in `command`"
            )
        if value is not None:
            for arg in value:
                _no_nul(arg)
            if not value[0]:
                raise ValueError("command[0] must name a program")
        return value

    _env = field_validator("env")(check_env)

    @field_validator("collect")
    @classmethod
    def _collect(cls, value: list[str]) -> list[str]:
        return [normalise_relative_path(p) for p in value]

    @model_validator(mode="after")
    def _unique_paths(self) -> RunRequest:
        seen: set[str] = set()
        main = MAIN_FILE[self.language]
        for i, f in enumerate(self.files):
            if f.path in seen:
                raise ValueError(f"files[{i}].path {f.path!r} is given twice")
            if f.path == main and self.code:
                raise ValueError(f"files[{i}].path {main!r} clashes with `code`")
            seen.add(f.path)
        return self


class Usage(BaseModel):
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    peak_memory_mib: float = 0.0


class CollectedFile(BaseModel):
    path: str
    content: str = Field(description="base64")
    size: int


class RunResult(BaseModel):
    """The outcome of one run. A failure of the code is a status, never an HTTP error."""

    id: str
    status: RunStatus
    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    usage: Usage = Field(default_factory=Usage)
    files: list[CollectedFile] = Field(default_factory=list)
    message: str | None = Field(None, description="Why the run ended as it did, when not plain.")
    backend: str = "nsjail"
    limits: Limits = Field(default_factory=Limits)
    created_at: datetime | None = None
    sandbox_id: str | None = None
    trace_id: str | None = None
    network: NetworkReport | None = None


class SandboxCreate(_Strict):
    """`POST /v1/sandboxes`: a workspace that persists across runs until deleted or idle."""

    language: Language = "python"
    backend: str | None = Field(None, pattern=BACKEND_NAME, description="As in a run.")
    image: str | None = Field(None, description="Image (Docker backend); not for nsjail.")
    limits: Limits = Field(
        default_factory=Limits,
        description="Defaults for its runs; `disk_mib` is the persistent workspace's quota.",
    )
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    ttl_s: int = Field(3600, ge=1, description="Deleted after this long without activity.")
    from_snapshot: str | None = Field(
        None,
        pattern=SNAPSHOT_ID,
        description="Start with this snapshot's workspace (copy-on-write: nothing is copied; "
        "`limits.disk_mib` bounds what the new sandbox writes). One of the caller's own.",
    )


class Sandbox(BaseModel):
    id: str
    tenant: str
    language: Language
    backend: str = "nsjail"
    image: str | None = None
    limits: Limits
    network: NetworkPolicy
    ttl_s: int
    state: Literal["active", "deleted", "expired"]
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


class SandboxList(BaseModel):
    sandboxes: list[Sandbox]


_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$")
MAX_LABELS = 32


class SnapshotCreate(_Strict):
    """`POST /v1/sandboxes/{id}/snapshots`: freeze the sandbox's workspace as it is now."""

    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Free-form tags (keys: letters, digits, `_.:/-`, up to 63; values up to "
        "256 characters), returned as given.",
    )
    ttl_s: int | None = Field(
        None,
        ge=1,
        description="Make it a cache: deleted once nothing has used it for this long (no "
        "sandbox started from it or from a snapshot above it), and evictable, least recently "
        "used first, when a new snapshot of its tenant would exceed `max_snapshot_disk_mib`. "
        "Null: kept until deleted.",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key {key[:64]!r} is not valid")
            _no_nul(val)
        return value


class Snapshot(BaseModel):
    """A frozen copy of a sandbox's workspace, never modified; sandboxes start from it."""

    id: str
    sandbox_id: str = Field(description="The sandbox it was taken from (which may be gone).")
    tenant: str
    size_bytes: int = Field(description="Disk it holds (allocated bytes of its image).")
    created_at: datetime
    labels: dict[str, str]
    ttl_s: int | None = Field(None, description="Set: a cache (see `SnapshotCreate.ttl_s`).")
    last_used_at: datetime | None = Field(
        None,
        description="Its creation, or the last time a sandbox started from it (or from a "
        "snapshot above it) was made or deleted.",
    )
    expires_at: datetime | None = Field(
        None,
        description="A cache's: when it goes unless used before then (one in use never "
        "goes); null for a snapshot kept until deleted.",
    )


class SnapshotList(BaseModel):
    snapshots: list[Snapshot]


class FileInfo(BaseModel):
    path: str
    size: int


class RunRecord(BaseModel):
    """A run as the daemon recorded it; `interrupted` when the daemon died or stopped during
    it (a client that disconnects from a streamed run cancels it: `cancelled`, with a message
    saying so)."""

    id: str
    status: Literal["running", "interrupted"] | RunStatus
    sandbox_id: str | None = None
    trace_id: str
    created_at: datetime
    finished_at: datetime | None = None
    result: RunResult | None = None
    request: dict[str, Any] | None = Field(
        None,
        description="What the daemon keeps of the request (as the audit trail does): "
        "language, limits, network, env names, file paths and hashes; never code or values.",
    )


class AuditRecord(BaseModel):
    seq: int
    time: float
    tenant: str | None
    token_id: str | None
    action: str
    target: str | None
    request: dict[str, Any]
    result: dict[str, Any]
    trace_id: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_after: int | None = Field(None, description="Pass as `after` for the next page.")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Capabilities(BaseModel):
    languages: list[Language]
    network_modes: list[str]
    cgroup_version: int
    limits_enforced: list[str]
    seccomp: bool


class RunEvent(BaseModel):
    """One Server-Sent Event of a streamed run: `start` (its id, to cancel it), `stdout` and
    `stderr` (text as it arrives, within the output cap), then `exit` (the full result) or
    `error` (the run could not be done: the same error body as a 4xx/5xx answer)."""

    event: Literal["start", "stdout", "stderr", "exit", "error"]
    run_id: str | None = None
    data: str | None = Field(None, description="stdout/stderr: the text of this chunk.")
    result: RunResult | None = Field(None, description="exit: the run's result.")
    error: dict[str, Any] | None = Field(None, description="error: {code, message, field}.")


class PoolStats(BaseModel):
    """One warm pool: sandboxes ready and in preparation, its adaptive target, and counts."""

    ready: int
    preparing: int
    target: int
    hits: int = Field(description="Runs served by a warm sandbox.")
    misses: int = Field(description="Runs that found the pool empty (it then grows).")
    failures: int = Field(description="Warm sandboxes that failed to start.")


class Info(BaseModel):
    version: str
    backend: str = Field(description="The default backend's type.")
    backends: list[str] = Field(
        default_factory=list, description="The backends runs may name (`backend`), by name."
    )
    backend_version: str
    default_limits: Limits
    max_limits: Limits
    max_concurrent_runs: int
    max_queued_runs: int
    max_request_bytes: int
    max_files_per_request: int = Field(
        MAX_FILES, description="Files one run (or sandbox upload) may carry in its `files`."
    )
    active_runs: int = Field(description="Runs executing now.")
    queued_runs: int = Field(description="Runs admitted and waiting for a slot.")
    warm_pools: dict[str, PoolStats] = Field(
        default_factory=dict, description="Warm pools by backend/profile, e.g. nsjail/python."
    )
    capabilities: Capabilities


# Interpreter contexts: a Jupyter kernel living in a sandbox, whose state (variables, imports,
# open files) survives between executions. Files are the sandbox's workspace.

ContextLanguage = Literal["python"]
ContextStatus = Literal["starting", "idle", "busy", "dead"]
ExecutionStatus = Literal[
    "ok",
    "error",
    "timeout",
    "interrupted",
    "killed",
    "memory_limit",
    "cpu_limit",
    "output_limit",
]
#: A context's id, as the daemon makes them.
CONTEXT_ID = r"^ctx_[0-9a-f]{16}$"
MAX_CODE_BYTES = 1_048_576


class ContextSpec(_Strict):
    """`POST /v1/sandboxes/{id}/contexts`: start an interpreter (a Jupyter kernel) in the
    sandbox. Memory, pids and cpu are the sandbox's limits, for the whole kernel."""

    language: ContextLanguage = "python"
    cwd: str | None = Field(
        None,
        description="Working directory, relative to the workspace (default: the workspace). "
        "Created if missing.",
    )
    env: dict[str, NulFreeStr] = Field(default_factory=dict, max_length=MAX_ENV)
    idle_timeout_s: int = Field(
        600, ge=1, description="The kernel is stopped after this long without an execution."
    )

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None) -> str | None:
        return None if value is None else normalise_relative_path(value)

    _env = field_validator("env")(check_env)


class ContextInfo(BaseModel):
    """An interpreter context. `dead` once its kernel is gone (killed, expired, crashed):
    `message` says why, and executions are refused (409) until it is restarted."""

    id: str
    sandbox_id: str
    language: ContextLanguage
    cwd: str | None = None
    status: ContextStatus
    execution_count: int = Field(0, description="Executions the kernel has counted so far.")
    idle_timeout_s: int = 600
    message: str | None = None
    created_at: datetime
    last_used_at: datetime


class ContextList(BaseModel):
    contexts: list[ContextInfo]


class ExecuteRequest(_Strict):
    """`POST .../contexts/{cid}/execute`: code run in the context's kernel, as a notebook cell."""

    code: str = Field(description="Python source, as one notebook cell.")
    timeout_s: float = Field(
        30.0,
        gt=0,
        description="Wall time of this execution: then it is interrupted, and the kernel "
        "killed if it does not stop.",
    )

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if len(value.encode()) > MAX_CODE_BYTES:
            raise ValueError(f"code is longer than {MAX_CODE_BYTES} bytes")
        return _no_nul(value)


class RichOutput(BaseModel):
    """One representation of a displayed value, by Jupyter's mime name (`text/plain`,
    `text/html`, `image/png`, `image/svg+xml`, `application/json`, ...). Binary data (PNG,
    JPEG) is base64; JSON is its JSON text; the rest is text."""

    mime: str
    data: str
    display_id: int = Field(
        0, description="Which output it belongs to: the representations of one value share it."
    )
    is_result: bool = Field(False, description="The cell's value (Out[n]), not a display().")


class ExecutionError(BaseModel):
    name: str
    value: str
    traceback: list[str] = Field(default_factory=list, description="Lines, ANSI colours removed.")


class ExecutionResult(BaseModel):
    """The outcome of one execution. A failure of the code (an exception, a timeout, the
    kernel killed) is a status, never an HTTP error."""

    status: ExecutionStatus
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    results: list[RichOutput] = Field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None
    message: str | None = Field(None, description="Why it ended as it did, when not plain.")
    wall_time_s: float = 0.0
    context_id: str | None = None


class ExecutionEvent(BaseModel):
    """One Server-Sent Event of a streamed execution: `stdout`/`stderr` (text as it comes),
    `result` (one rich output), then `done` (the full result) or `error` (the execution could
    not be done: the same error body as a 4xx/5xx answer)."""

    event: Literal["start", "stdout", "stderr", "result", "done", "error"]
    context_id: str | None = None
    data: str | None = Field(None, description="stdout/stderr: the text of this chunk.")
    output: RichOutput | None = Field(None, description="result: one rich output.")
    result: ExecutionResult | None = Field(None, description="done: the execution's result.")
    error: dict[str, Any] | None = Field(None, description="error: {code, message, field}.")


# -- Studio: the run list, the overview's figures, the audit check ----------------------------


class RunSummary(BaseModel):
    """One line of the run list: what a run was and how it ended, without its output."""

    id: str
    tenant: str
    status: Literal["running", "interrupted"] | RunStatus
    language: str | None = None
    backend: str | None = None
    sandbox_id: str | None = None
    trace_id: str
    exit_code: int | None = None
    wall_time_s: float | None = None
    created_at: datetime
    finished_at: datetime | None = None


class RunList(BaseModel):
    runs: list[RunSummary]
    next_after: str | None = Field(None, description="Pass as `after` for the next (older) page.")


class Stats(BaseModel):
    """The Studio overview's figures: now, and over the last hour."""

    active_runs: int
    queued_runs: int
    warm_pools: dict[str, PoolStats]
    runs_last_hour: dict[str, int] = Field(description="Runs started in the last hour, by status.")
    latency_p50_s: float | None = Field(None, description="Median run time, last hour.")
    latency_p90_s: float | None = None
    rejected: dict[str, int] = Field(description="Requests refused since start, by error code.")
    runs_per_minute: list[int] = Field(
        description="Runs started in each of the last 60 minutes, oldest first."
    )


class AuditVerdict(BaseModel):
    """What `sandboxd audit verify` says of the chain."""

    ok: bool
    records: int
    problem: str | None = None
    seq: int | None = Field(None, description="The first record found wrong.")


# -- solves: coder's rounds, reported to the daemon it uses -----------------------------------

SOLVE_ID = r"^slv_[0-9a-f]{16}$"
Text = Annotated[str, Field(max_length=65536)]
Name = Annotated[str, Field(max_length=256)]
Diff = Annotated[str, Field(max_length=1_048_576)]


class _Exact(_Strict):
    """Solve models take JSON types as they are: `false` is no number, `"1"` no count."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SolveCreate(_Exact):
    """`POST /v1/solves`: a coder solve starts (coder sends it; the Studio shows it)."""

    task: Text
    repo: Name = Field(description="The repository's name (its folder), not a path.")
    test_command: Text
    models: dict[Name, Name] = Field(default_factory=dict, max_length=16, description="By role.")
    budgets: dict[Name, float] = Field(default_factory=dict, max_length=16)
    trace_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")


class RoleUsage(_Exact):
    calls: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)


class TestsEvent(_Exact):
    """A test run: before any edit (round 0) or after round N's edits (`patch`: the whole
    change being tested)."""

    kind: Literal["tests"]
    round: int = Field(ge=0)
    passed: bool
    exit_code: int | None = None
    summary: Text = ""
    failing: list[Name] = Field(default_factory=list, max_length=1000)
    seconds: float = Field(0.0, ge=0)
    patch: Diff | None = None


class EditsEvent(_Exact):
    """The writer's edits of one round: the files changed and the blocks not applied."""

    kind: Literal["edits"]
    round: int = Field(ge=1)
    files: list[Name] = Field(default_factory=list, max_length=1000)
    applied: int = Field(0, ge=0)
    not_applied: int = Field(0, ge=0)


class ModelEvent(_Exact):
    """One model call: which role, which model, what it cost."""

    kind: Literal["model"]
    round: int = Field(ge=0)
    role: Name
    model: Name
    usage: RoleUsage = Field(default_factory=RoleUsage)
    cached: bool = False


class ReviewEvent(_Exact):
    kind: Literal["review"]
    round: int = Field(ge=1)
    verdict: Literal["APPROVE", "REVISE"]
    points: list[Text] = Field(default_factory=list, max_length=100)


class NoteEvent(_Exact):
    """Anything else worth a line on the timeline (setup steps, the sandbox it uses)."""

    kind: Literal["note"]
    text: Text
    sandbox_id: str | None = Field(None, max_length=64)


class EndEvent(_Exact):
    """The last event: how the solve stopped, the final patch and what each role spent."""

    kind: Literal["end"]
    status: Name
    reason: Text = ""
    rounds: int = Field(0, ge=0)
    patch: Diff = ""
    usage: dict[Name, RoleUsage] = Field(default_factory=dict, max_length=16)
    wall_time_s: float = Field(0.0, ge=0)


SolveEvent = Annotated[
    TestsEvent | EditsEvent | ModelEvent | ReviewEvent | NoteEvent | EndEvent,
    Field(discriminator="kind"),
]


class SolveEvents(_Exact):
    """`POST /v1/solves/{id}/events`: events appended in order (after `end`: refused)."""

    events: list[SolveEvent] = Field(min_length=1, max_length=500)


class RecordedEvent(BaseModel):
    seq: int
    time: float
    event: SolveEvent


class SolveSummary(BaseModel):
    id: str
    tenant: str
    status: str = Field(description="`running`, or the status its `end` event gave.")
    task: str
    repo: str
    test_command: str
    models: dict[str, str]
    budgets: dict[str, float]
    trace_id: str | None = None
    events: int = 0
    created_at: datetime
    updated_at: datetime


class Solve(SolveSummary):
    timeline: list[RecordedEvent] = Field(default_factory=list)


class SolveList(BaseModel):
    solves: list[SolveSummary]
    next_after: str | None = None


class SolveAppended(BaseModel):
    events: int = Field(description="Events the solve now holds.")
