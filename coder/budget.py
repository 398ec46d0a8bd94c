"""Budgets and the one ledger of what the agents spent.

Budgets: iterations, tokens, cost and wall time, checked before every model call and test run,
every role counted alike. They fail closed: at the limit, nothing more is spent.

The writer's requests for more of the repository (`coder.lookup`) are bounded twice: a turn
that asks is an iteration like any other, and the requests themselves have their own count,
`max_requests` per solve (refused once spent), in the asking role's entry.

The ledger: one entry per role (by the role's name), holding its calls, cached calls, tokens,
cost, prompt sizes and requests. It is the only count: the budget checks read its totals, and the
result's per-role usage is read from it (`AgentUsage` is only its wire form).

Candidates (coder.candidates) each have a Budget of their own (their iterations, requests and
per-role ledger, reported per candidate) over one shared `Pool`: the tokens, cost and wall
time of the whole solve. The pool fails closed across concurrent loops: a call is reserved
before it is sent (its prompt's estimated tokens and its completion cap, priced) and starts
only while what was spent plus what the calls in flight may still spend is under the limits;
its completion cap is what is left after them. With one loop this is the check of earlier
versions. A role's `budget_share` caps its own spending at that share of the limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coder.errors import BudgetExhausted
from coder.model import Usage
from coder.result import AgentUsage

#: A completion is capped at this many tokens, or what the budget leaves.
COMPLETION_CAP = 4096


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
class Pool:
    """The limits one solve shares between its loops, what they spent and what is in flight."""

    max_tokens: int = 400_000
    max_cost_usd: float = 2.0
    max_wall_s: float = 900.0
    started: float = field(default_factory=time.monotonic)
    spent: Usage = field(default_factory=Usage)
    reserved_tokens: int = 0
    reserved_cost_usd: float = 0.0
    in_flight: int = 0
    #: What each role spent across every loop of the solve (a role's `budget_share` is of
    #: the solve, not of one candidate).
    by_role: dict[str, Usage] = field(default_factory=dict)
    #: Set (and replaced) whenever a call in flight ends: what a waiting loop waits for.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Reservation:
    tokens: int
    cost_usd: float
    #: The completion cap the call may use.
    cap: int


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
    #: The shared limits (one of its own unless given: several loops pass the same one).
    pool: Pool | None = None
    #: Each role's share of the token and cost limits (`budget_share`), by role name.
    shares: dict[str, float] = field(default_factory=dict)

    shared: Pool = field(init=False)

    def __post_init__(self) -> None:
        own = Pool(self.max_tokens, self.max_cost_usd, self.max_wall_s, self.started)
        self.shared = self.pool or own

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
        return self.shared.elapsed_s()

    def check(self, role: str | None = None) -> None:
        """Raise BudgetExhausted when any budget is spent (the shared ones counting the calls
        in flight; with `role`, its share too)."""
        p = self.shared
        if p.elapsed_s() >= p.max_wall_s:
            raise BudgetExhausted("wall time", f"{p.elapsed_s():.0f}s of {p.max_wall_s:.0f}s")
        tokens = p.spent.tokens + p.reserved_tokens
        if tokens >= p.max_tokens:
            raise BudgetExhausted("tokens", f"{tokens} of {p.max_tokens}")
        cost = p.spent.cost_usd + p.reserved_cost_usd
        if cost >= p.max_cost_usd:
            raise BudgetExhausted("cost", f"${cost:.4f} of ${p.max_cost_usd:.2f}")
        share = self.shares.get(role or "")
        if role is not None and share is not None:
            used = p.by_role.get(role, Usage())
            if used.tokens >= share * p.max_tokens:
                raise BudgetExhausted("tokens", f"{role} spent its share {share:g}")
            if used.cost_usd >= share * p.max_cost_usd:
                raise BudgetExhausted("cost", f"{role} spent its share {share:g}")

    def reserve(
        self,
        role: str,
        prompt_tokens: int,
        cost: Callable[[Usage], float] | None = None,
        default: int = COMPLETION_CAP,
    ) -> Reservation:
        """Check, then hold room for one call of `role` with a prompt of about
        `prompt_tokens`; its completion cap is what the limits leave after the calls in
        flight. `cost` prices a usage for the call's model (None: unpriced, counts 0)."""
        self.check(role)
        p = self.shared
        left = p.max_tokens - p.spent.tokens - p.reserved_tokens
        share = self.shares.get(role)
        if share is not None:
            left = min(left, int(share * p.max_tokens) - p.by_role.get(role, Usage()).tokens)
        if left < prompt_tokens + 1:
            raise BudgetExhausted(
                "tokens", f"a call of about {prompt_tokens} prompt tokens; {max(0, left)} left"
            )
        cap = min(default, left - prompt_tokens)
        priced = 0.0
        if cost is not None:
            money = p.max_cost_usd - p.spent.cost_usd - p.reserved_cost_usd
            if share is not None:
                money = min(money, share * p.max_cost_usd - p.by_role.get(role, Usage()).cost_usd)
            prompt_cost = cost(Usage(prompt_tokens, 0))
            per_token = cost(Usage(0, 1000)) / 1000
            if per_token > 0:
                cap = min(cap, int((money - prompt_cost) / per_token))
            if prompt_cost > money or cap < 1:
                raise BudgetExhausted(
                    "cost", f"a call of about {prompt_tokens} prompt tokens; ${money:.4f} left"
                )
            priced = cost(Usage(prompt_tokens, cap))
        held = Reservation(prompt_tokens + cap, priced, cap)
        p.reserved_tokens += held.tokens
        p.reserved_cost_usd += held.cost_usd
        p.in_flight += 1
        return held

    async def hold(
        self, role: str, prompt_tokens: int, cost: Callable[[Usage], float] | None = None
    ) -> Reservation:
        """`reserve`, waiting while another loop's call in flight holds the room it needs
        (its unused room comes back when it ends); BudgetExhausted when none is in flight."""
        while True:
            try:
                return self.reserve(role, prompt_tokens, cost)
            except BudgetExhausted:
                if self.shared.in_flight == 0 or not self._fits_unreserved(
                    role, prompt_tokens, cost
                ):
                    raise  # nothing in flight, or what is spent alone refuses it: waiting is vain
                await self.shared.released.wait()

    def _fits_unreserved(
        self, role: str, prompt_tokens: int, cost: Callable[[Usage], float] | None
    ) -> bool:
        """Whether the call would fit were no other call in flight (synchronous: no other
        loop runs while the reservations are set aside)."""
        p = self.shared
        saved = (p.reserved_tokens, p.reserved_cost_usd, p.in_flight)
        p.reserved_tokens, p.reserved_cost_usd = 0, 0.0
        try:
            self.reserve(role, prompt_tokens, cost)
            return True
        except BudgetExhausted:
            return False
        finally:
            p.reserved_tokens, p.reserved_cost_usd, p.in_flight = saved

    def release(self, held: Reservation) -> None:
        p = self.shared
        p.reserved_tokens -= held.tokens
        p.reserved_cost_usd -= held.cost_usd
        p.in_flight -= 1
        ended, p.released = p.released, asyncio.Event()
        ended.set()

    def start_iteration(self) -> None:
        if self.iterations >= self.max_iterations:
            raise BudgetExhausted("iterations", f"{self.iterations} of {self.max_iterations}")
        self.check()
        self.iterations += 1

    def completion_cap(self, default: int = COMPLETION_CAP) -> int:
        """Completion tokens a call may use without overrunning the token budget."""
        p = self.shared
        return max(1, min(default, p.max_tokens - p.spent.tokens - p.reserved_tokens))

    def prompt(self, role: str, chars: int) -> None:
        """Record the size of a prompt about to be sent."""
        self.entry(role).prompt_chars.append(chars)

    def charge(self, role: str, usage: Usage, *, cached: bool = False) -> None:
        """Record one reply: a call, and what it cost."""
        e = self.entry(role)
        e.calls += 1
        e.cached_calls += int(cached)
        e.usage.add(usage)
        self.shared.spent.add(usage)
        self.shared.by_role.setdefault(role, Usage()).add(usage)

    def grant_requests(self, role: str, wanted: int) -> int:
        """How many of `wanted` requests may be answered, counted as spent; 0 once the
        solve's `max_requests` are spent."""
        spent = sum(e.requests for e in self.ledger.values())
        granted = max(0, min(wanted, self.max_requests - spent))
        self.entry(role).requests += granted
        return granted
