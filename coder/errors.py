"""Errors of coder: one base class and a few precise subclasses, each with its exit code."""

from __future__ import annotations


class CoderError(Exception):
    """Base error of the coder package."""

    exit_code = 3


class UsageError(CoderError):
    """Bad command line, config or repository (exit 2)."""

    exit_code = 2


class ModelError(CoderError):
    """The model endpoint failed after retries, or answered something unusable (exit 3)."""


class SandboxError(CoderError):
    """sandboxd was unreachable or could not run the tests (exit 3)."""


class BudgetExhausted(CoderError):
    """A budget ran out; the solve stops with what it has (exit 1)."""

    exit_code = 1

    def __init__(self, budget: str, detail: str) -> None:
        super().__init__(f"{budget} budget exhausted: {detail}")
        self.budget = budget
