"""Errors of coder: one base class and a few precise subclasses, each with its exit code and
the status a solve that stops on it reports (coder.result.Status)."""

from __future__ import annotations

from typing import ClassVar

from coder.result import SetupFailure, Status


class CoderError(Exception):
    """Base error of the coder package (one that is none of the kinds below: `coder_error`)."""

    exit_code = 3
    status: ClassVar[Status] = "coder_error"


class UsageError(CoderError):
    """Bad command line, config or repository (exit 2)."""

    exit_code = 2
    status = "usage_error"


class ModelError(CoderError):
    """The model endpoint failed after retries, or answered something unusable (exit 3)."""

    status = "model_error"


class SandboxError(CoderError):
    """sandboxd was unreachable or could not run the tests (exit 3)."""

    status = "sandbox_error"


class BudgetExhausted(CoderError):
    """A budget ran out; the solve stops with what it has (exit 1)."""

    exit_code = 1
    status = "budget_exhausted"

    def __init__(self, budget: str, detail: str) -> None:
        super().__init__(f"{budget} budget exhausted: {detail}")
        self.budget = budget


class SetupFailed(CoderError):
    """The sandbox could not be prepared, or the tests do not even collect there: an error of
    the environment, not a bug for the writer to fix (exit 3). It names the step, its exit
    status and the tail of its output."""

    status = "setup_failed"

    def __init__(self, failure: SetupFailure) -> None:
        exit_status = "" if failure.exit_code is None else f" (exit {failure.exit_code})"
        super().__init__(f"{failure.step}{exit_status}: {failure.reason}")
        self.failure = failure


class InvalidReply(CoderError):
    """A role's typed reply did not validate, nor did its one repair: a named stop, never a
    guessed verdict (exit 3)."""

    status = "invalid_reply"


class Vetoed(CoderError):
    """A role that may veto vetoed the change (exit 1)."""

    exit_code = 1
    status = "vetoed"
