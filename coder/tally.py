"""The result of a best-of-N solve, told from its candidates' reports (coder.candidates): the
usage and times summed over them, the chosen one's patch and tests, and, when none was chosen,
a status that says why — the one every candidate stopped with, `budget_exhausted` when none
was green and the budget ran out, else `gave_up` (each candidate's `why` tells the rest)."""

from __future__ import annotations

from typing import cast

from coder.result import AgentUsage, Candidate, SolveResult, Status


def usage_sum(usages: list[dict[str, AgentUsage]]) -> dict[str, AgentUsage]:
    total: dict[str, AgentUsage] = {}
    for u in usages:
        for name, a in u.items():
            t = total.setdefault(name, AgentUsage())
            t.calls += a.calls
            t.cached_calls += a.cached_calls
            t.prompt_tokens += a.prompt_tokens
            t.completion_tokens += a.completion_tokens
            t.cost_usd = round(t.cost_usd + a.cost_usd, 6)
    return total


def totals(r: SolveResult, reports: list[Candidate], writer: str) -> None:
    """Every candidate, and the sums the result reports for the whole solve."""
    r.candidates = reports
    r.roles = usage_sum([c.usage for c in reports])
    r.writer = r.roles.get(writer, AgentUsage())
    r.reviewer = r.roles.get("reviewer", AgentUsage())
    r.model_time_s = round(sum(c.model_time_s for c in reports), 4)
    r.test_time_s = round(sum(c.test_time_s for c in reports), 4)
    if r.tests_before is None and reports:
        r.tests_before = reports[0].tests_before


def chosen(r: SolveResult, c: Candidate) -> None:
    r.chosen_candidate = c.index
    r.status = "fixed"
    r.reason = f"candidate {c.index} {c.why}"
    r.iterations = c.iterations
    r.tests_after = c.full_suite or c.tests_after
    r.files_changed = c.files_changed


def none_chosen(r: SolveResult, reports: list[Candidate], budgets: list[str | None]) -> None:
    """The status of a solve whose candidates gave no patch; `budgets`: the budget each
    candidate ran out of, if any."""
    if not reports:
        return
    statuses = {c.status for c in reports}
    greens = sum(c.status == "green" for c in reports)
    only = reports[0].status if len(statuses) == 1 else None
    if only is not None and only not in ("green", "stopped"):
        r.status = cast(Status, only)
        r.reason = f"every candidate: {reports[0].reason}"
    elif greens == 0 and "budget_exhausted" in statuses:
        r.status, r.reason = "budget_exhausted", f"{r.coverage}; the budget ran out"
    else:
        r.status = "gave_up"
        r.reason = f"{r.coverage}; none was chosen (see each candidate's why)"
    if r.status == "budget_exhausted":
        r.budget = next((b for b in budgets if b), None)
    best = max(reports, key=lambda c: c.status == "green")
    r.tests_after = best.tests_after
    r.iterations = max(c.iterations for c in reports)
