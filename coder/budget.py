"""Budgets: iterations, tokens, cost and wall time, checked before every model call and test
run, writer and reviewer counted alike. They fail closed: at the limit, nothing more is spent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from coder.errors import BudgetExhausted
from coder.model import Usage


@dataclass
class Budget:
    max_iterations: int = 8
    max_tokens: int = 400_000
    max_cost_usd: float = 2.0
    max_wall_s: float = 900.0
    started: float = field(default_factory=time.monotonic)
    iterations: int = 0
    usage: dict[str, Usage] = field(
        default_factory=lambda: {"writer": Usage(), "reviewer": Usage()}
    )

    @property
    def total(self) -> Usage:
        total = Usage()
        for u in self.usage.values():
            total.add(u)
        return total

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        """Raise BudgetExhausted when any budget is spent."""
        total = self.total
        if self.elapsed_s() >= self.max_wall_s:
            raise BudgetExhausted("wall time", f"{self.elapsed_s():.0f}s of {self.max_wall_s:.0f}s")
        if total.tokens >= self.max_tokens:
            raise BudgetExhausted("tokens", f"{total.tokens} of {self.max_tokens}")
        if total.cost_usd >= self.max_cost_usd:
            raise BudgetExhausted("cost", f"${total.cost_usd:.4f} of ${self.max_cost_usd:.2f}")

    def start_iteration(self) -> None:
        if self.iterations >= self.max_iterations:
            raise BudgetExhausted("iterations", f"{self.iterations} of {self.max_iterations}")
        self.check()
        self.iterations += 1

    def completion_cap(self, default: int = 4096) -> int:
        """Completion tokens a call may use without overrunning the token budget."""
        return max(1, min(default, self.max_tokens - self.total.tokens))

    def charge(self, agent: str, usage: Usage) -> None:
        self.usage[agent].add(usage)
