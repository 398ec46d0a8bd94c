"""Budgets and the one ledger of what the agents spent.

Budgets: iterations, tokens, cost and wall time, checked before every model call and test run,
every role counted alike. They fail closed: at the limit, nothing more is spent.

The writer's requests for more of the repository (`coder.lookup`) are bounded twice: a turn
that asks is an iteration like any other, and the requests themselves have their own count,
`max_requests` per solve (refused once spent), in the asking role's entry.

The ledger: one entry per role (by the role's name), holding its calls, cached calls, tokens,
cost, prompt sizes and requests. It is the only count: the budget checks read its totals, and the
result's per-role usage is read from it (`AgentUsage` is only its wire form)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from coder.errors import BudgetExhausted
from coder.model import Usage
from coder.result import AgentUsage


@dataclass
class Entry:
    """What one role has spent so far."""

    calls: int = 0
    cached_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    prompt_chars: list[int] = field(default_factory=list)
    requests: int = 0
    #: Characters of coder's answers to the role's requests, per asking turn.
    answer_chars: list[int] = field(default_factory=list)

    def wire(self) -> AgentUsage:
        return AgentUsage(
            calls=self.calls,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            cost_usd=round(self.usage.cost_usd, 6),
            cached_calls=self.cached_calls,
        )


@dataclass
class Budget:
    max_iterations: int = 8
    max_tokens: int = 400_000
    max_cost_usd: float = 2.0
    max_wall_s: float = 900.0
    max_requests: int = 16
    started: float = field(default_factory=time.monotonic)
    iterations: int = 0
    ledger: dict[str, Entry] = field(default_factory=dict)

    def entry(self, role: str) -> Entry:
        """The role's entry (an empty one for a role that has not been asked yet)."""
        return self.ledger.setdefault(role, Entry())

    @property
    def total(self) -> Usage:
        total = Usage()
        for e in self.ledger.values():
            total.add(e.usage)
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

    def prompt(self, role: str, chars: int) -> None:
        """Record the size of a prompt about to be sent."""
        self.entry(role).prompt_chars.append(chars)

    def charge(self, role: str, usage: Usage, *, cached: bool = False) -> None:
        """Record one reply: a call, and what it cost."""
        e = self.entry(role)
        e.calls += 1
        e.cached_calls += int(cached)
        e.usage.add(usage)

    def grant_requests(self, role: str, wanted: int) -> int:
        """How many of `wanted` requests may be answered, counted as spent; 0 once the
        solve's `max_requests` are spent."""
        spent = sum(e.requests for e in self.ledger.values())
        granted = max(0, min(wanted, self.max_requests - spent))
        self.entry(role).requests += granted
        return granted
