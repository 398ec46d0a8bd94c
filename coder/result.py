"""The result of a solve, as `--json` prints it and CI mode writes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal[
    "fixed",
    "already_passing",
    "budget_exhausted",
    "gave_up",
    "model_error",
    "sandbox_error",
    "setup_failed",
    "usage_error",
    "coder_error",
]
#: A status of an error is the `status` of its class in coder.errors, with its exit code.
EXIT_CODES: dict[str, int] = {
    "fixed": 0,
    "already_passing": 0,
    "budget_exhausted": 1,
    "gave_up": 1,
    "model_error": 3,
    "sandbox_error": 3,
    "setup_failed": 3,
    "usage_error": 2,
    "coder_error": 3,
}


class AgentUsage(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached_calls: int = 0


class TestsSummary(BaseModel):
    passed: bool
    exit_code: int | None
    summary: str
    failing: list[str]


class SetupStep(BaseModel):
    """One step of preparing the sandbox (`setup.sh`, `venv`, `install`), or the `preflight`:
    the first test run, which must collect."""

    step: str
    command: str = ""
    exit_code: int | None = None
    status: str = "ok"
    seconds: float = 0.0


class SetupFailure(SetupStep):
    """The step a `setup_failed` solve stopped at, and the end of its output."""

    reason: str = ""
    output_tail: str = ""


class EnvState(BaseModel):
    """The prepared environment of a solve (coder.envs): its key, whether the solve started
    from a kept snapshot of it (`reused`: no setup ran), and that snapshot, or the one this
    solve kept."""

    key: str
    reused: bool = False
    snapshot_id: str | None = None
    #: Reused: seconds to fork the snapshot, and until the sandbox held the current tree.
    fork_s: float | None = None
    ready_s: float | None = None


class SolveResult(BaseModel):
    status: Status
    reason: str = ""
    budget: str | None = Field(None, description="Which budget ran out, for budget_exhausted.")
    iterations: int = 0
    setup: SetupFailure | None = Field(None, description="The failed step, for setup_failed.")
    setup_steps: list[SetupStep] = Field(default_factory=list)
    setup_time_s: float = 0.0
    env: EnvState | None = Field(None, description="The prepared environment, when set up.")
    tests_before: TestsSummary | None = None
    tests_after: TestsSummary | None = None
    writer: AgentUsage = Field(default_factory=AgentUsage)
    reviewer: AgentUsage = Field(default_factory=AgentUsage)
    wall_time_s: float = 0.0
    model_time_s: float = 0.0
    test_time_s: float = 0.0
    overhead_s_per_iteration: float = 0.0
    writer_prompt_chars: list[int] = Field(default_factory=list)
    trace_id: str = ""
    trace_path: str | None = None
    patch_path: str | None = None
    files_changed: list[str] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]
