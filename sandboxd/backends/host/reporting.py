"""What every backend reports the same way: a run's status and message from how it ended,
its `RunResult`, and the backend's `Capabilities`.

A client must not be able to tell the backends apart by their wording: a timeout, a limit or
a cancel reads the same whichever isolation ran the code. So the chain from "why the
supervisor killed it / how the init exited / whether the memory limit fired" to a status and
a message is one function, `classify`; a backend adds only what only it can tell (nsjail's
log when a jail did not start, the program's own "cannot execute" line).
"""

from __future__ import annotations

from sandboxd.backends.host.supervise import KillReason, Supervised
from sandboxd.models import Capabilities, Limits, RunResult, RunStatus, Usage
from sandboxd.settings import Settings

CANCELLED = "cancelled (DELETE /v1/runs/{id}); the tree was killed"

#: Every limit of a request that both backends enforce (and report in their capabilities).
LIMITS_ENFORCED = [
    "wall_time_s",
    "cpu_time_s",
    "memory_mib",
    "pids",
    "output_bytes",
    "file_size_mib",
    "disk_mib",
]


def classify(
    killed_for: KillReason | None,
    limits: Limits,
    *,
    exit_code: int | None,
    signal: str | None,
    oom: bool = False,
    oom_kills: int | None = None,
) -> tuple[RunStatus, str | None] | None:
    """The status and message of a run from how it ended: why the supervisor killed it (if
    it did), the program's exit code or the signal that killed it (as its init reported),
    and whether the memory limit killed processes (`oom_kills`: how many, when counted).
    None when nothing says how it ended (no exit, no signal): the backend then tells why.
    """
    if killed_for == "cancelled":
        return "cancelled", CANCELLED
    if killed_for == "timeout":
        return "timeout", f"wall time limit of {limits.wall_time_s}s reached"
    if killed_for == "output_limit":
        return "output_limit", f"output over {limits.output_bytes} bytes on a stream; run killed"
    if killed_for == "cpu_limit" or signal == "SIGXCPU":
        return "cpu_limit", f"cpu time limit of {limits.cpu_time_s}s reached"
    if oom and exit_code != 0:
        counted = f" ({oom_kills} processes killed)" if oom_kills is not None else ""
        return "memory_limit", f"memory limit of {limits.memory_mib} MiB reached{counted}"
    if exit_code is not None:
        return ("ok" if exit_code == 0 else "failed"), None
    if signal is not None:
        return "killed", None
    return None


def pids_note(limits: Limits, refused: int, status: RunStatus) -> list[str]:
    """The note that the pids limit refused forks (when it did and the run did not pass)."""
    if refused and status != "ok":
        return [f"pids limit of {limits.pids} refused {refused} forks"]
    return []


def to_result(
    run_id: str,
    backend: str,
    limits: Limits,
    seen: Supervised,
    ended: tuple[RunStatus, list[str]],
    exit: tuple[int | None, str | None],
    peak_mib: float,
) -> RunResult:
    """The RunResult of a supervised run: `ended` is its status and the notes that make its
    message, `exit` its exit code and signal name."""
    status, notes = ended
    exit_code, signal = exit
    return RunResult(
        id=run_id,
        status=status,
        exit_code=exit_code,
        signal=signal,
        stdout=seen.stdout.text(),
        stderr=seen.stderr.text(),
        stdout_truncated=seen.stdout.truncated,
        stderr_truncated=seen.stderr.truncated,
        usage=Usage(
            wall_time_s=round(seen.wall_time_s, 4),
            cpu_time_s=round(seen.cpu_time_s, 4),
            peak_memory_mib=round(peak_mib, 2),
        ),
        message="; ".join(notes) or None,
        backend=backend,
        limits=limits,
    )


def capabilities(settings: Settings, cgroup_version: int) -> Capabilities:
    """What a backend enforces on this host: the same languages, limits and seccomp for
    every backend; the network modes the daemon's egress settings allow."""
    return Capabilities(
        languages=["python", "bash", "node"],
        network_modes=["none", "allowlist"] if settings.egress.allowlists else ["none"],
        cgroup_version=cgroup_version,
        limits_enforced=list(LIMITS_ENFORCED),
        seccomp=True,
    )
