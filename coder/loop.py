"""The loop: run the tests; the writer edits; run them again; once green, the reviewer checks
the diff against the results; repeat until fixed or a budget runs out. Every stop has a name."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from coder import context
from coder.budget import Budget
from coder.digest import TestDigest
from coder.edits import apply_blocks, parse_blocks, unified_diff
from coder.errors import BudgetExhausted, CoderError, ModelError, SandboxError
from coder.model import Message, Model, Reply
from coder.repo import RepoFiles
from coder.result import AgentUsage, SolveResult, TestsSummary
from coder.sandbox import SandboxSession
from coder.trace import TraceWriter

MAX_FRUITLESS = 3  # replies in a row with no applicable edit before giving up


def summary(d: TestDigest) -> TestsSummary:
    return TestsSummary(
        passed=d.passed, exit_code=d.exit_code, summary=d.summary, failing=d.failing
    )


@dataclass
class Solver:
    task: str
    repo: RepoFiles
    sandbox: SandboxSession
    writer: Model
    reviewer: Model
    budget: Budget
    trace: TraceWriter
    allow_test_edits: bool = False
    current: dict[str, str] = field(init=False)
    model_time_s: float = 0.0
    test_time_s: float = 0.0
    result: SolveResult = field(init=False)

    def __post_init__(self) -> None:
        self.current = dict(self.repo.text)
        self.result = SolveResult(status="gave_up", trace_id=self.trace.trace_id)
        self._usage = {"writer": AgentUsage(), "reviewer": AgentUsage()}

    @property
    def diff(self) -> str:
        return unified_diff(self.repo.text, self.current)

    async def _ask(self, agent: str, model: Model, messages: list[Message]) -> Reply:
        self.budget.check()
        chars = sum(len(m["content"]) for m in messages)
        if agent == "writer":
            self.result.writer_prompt_chars.append(chars)
        self.trace.event(
            "model.request",
            agent=agent,
            model=model.name,
            prompt_chars=chars,
            iteration=self.budget.iterations,
        )
        started = time.monotonic()
        reply = await model.complete(messages, max_tokens=self.budget.completion_cap())
        self.model_time_s += time.monotonic() - started
        self.budget.charge(agent, reply.usage)
        usage = self._usage[agent]
        usage.calls += 1
        usage.cached_calls += int(reply.cached)
        usage.prompt_tokens += reply.usage.prompt_tokens
        usage.completion_tokens += reply.usage.completion_tokens
        usage.cost_usd = round(usage.cost_usd + reply.usage.cost_usd, 6)
        self.trace.event(
            "model.reply",
            agent=agent,
            model=reply.model,
            text=reply.text,
            usage=asdict(reply.usage),
            cached=reply.cached,
        )
        return reply

    async def _test(self) -> TestDigest:
        self.budget.check()
        run = await self.sandbox.run_tests()
        self.test_time_s += run.seconds
        self.trace.event(
            "tests.run",
            iteration=self.budget.iterations,
            passed=run.digest.passed,
            exit_code=run.digest.exit_code,
            summary=run.digest.summary,
            failing=run.digest.failing,
            seconds=round(run.seconds, 4),
        )
        return run.digest

    async def run(self) -> SolveResult:
        started = time.monotonic()
        try:
            await self._loop()
        except BudgetExhausted as exc:
            self.result.status, self.result.budget = "budget_exhausted", exc.budget
            self.result.reason = str(exc)
        except ModelError as exc:
            self.result.status, self.result.reason = "model_error", str(exc)
        except SandboxError as exc:
            self.result.status, self.result.reason = "sandbox_error", str(exc)
        except CoderError as exc:
            self.result.status, self.result.reason = "sandbox_error", str(exc)
        r = self.result
        r.iterations = self.budget.iterations
        r.writer, r.reviewer = self._usage["writer"], self._usage["reviewer"]
        r.wall_time_s = round(time.monotonic() - started, 4)
        r.model_time_s, r.test_time_s = round(self.model_time_s, 4), round(self.test_time_s, 4)
        overhead = max(0.0, r.wall_time_s - self.model_time_s - self.test_time_s)
        r.overhead_s_per_iteration = round(overhead / max(1, r.iterations), 4)
        r.files_changed = sorted(
            p for p in self.current if self.repo.text.get(p) != self.current[p]
        )
        return r

    async def _loop(self) -> None:
        before = await self._test()
        self.result.tests_before = self.result.tests_after = summary(before)
        if before.passed:
            self.result.status, self.result.reason = "already_passing", "the tests pass already"
            return
        latest, history = before, list[context.Attempt]()
        feedback: str | None = None
        review: str | None = None
        fruitless = 0
        while True:
            self.budget.start_iteration()
            n = self.budget.iterations
            messages = context.writer_messages(
                self.task, latest, self.current, history, feedback, review
            )
            reply = await self._ask("writer", self.writer, messages)
            if context.GIVE_UP in reply.text and "<<<<<<< SEARCH" not in reply.text:
                self.result.status, self.result.reason = "gave_up", "the writer gave up"
                return
            parsed = parse_blocks(reply.text)
            report = apply_blocks(
                parsed.blocks, self.current, allow_test_edits=self.allow_test_edits
            )
            report.failed = parsed.errors + report.failed
            self.trace.event(
                "edits.applied",
                iteration=n,
                applied=report.applied,
                failed=report.failed,
                refused=report.refused,
                files=sorted(report.changed),
            )
            feedback = report.feedback() or "no edit blocks found in your answer"
            if not report.changed:
                fruitless += 1
                history.append(context.Attempt(n, [], "no edit applied"))
                if fruitless >= MAX_FRUITLESS:
                    self.result.status = "gave_up"
                    self.result.reason = f"{fruitless} answers in a row had no applicable edit"
                    return
                continue
            fruitless = 0
            self.current.update(report.changed)
            await self.sandbox.write(report.changed)
            latest = await self._test()
            self.result.tests_after = summary(latest)
            history.append(context.Attempt(n, sorted(report.changed), latest.short()))
            if not latest.passed:
                review = None
                continue
            answer = await self._ask(
                "reviewer",
                self.reviewer,
                context.reviewer_messages(self.task, self.diff, latest, before),
            )
            word, points = context.verdict(answer.text)
            self.trace.event("review.verdict", iteration=n, verdict=word, points=points)
            if word == "APPROVE":
                self.result.status, self.result.reason = "fixed", "tests pass; reviewer approved"
                return
            review = points
            history[-1].outcome += "; reviewer asked to revise"
