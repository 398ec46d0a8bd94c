"""The loop: run the tests; the writer edits; run them again; once green, the checking roles
(the reviewer, by default) check the diff against the results; repeat until fixed or a budget
runs out. Every stop has a name.

Who acts when is the pipeline's (coder.pipeline), executed here in order: the writer every
round; the checking roles `after = "edit"` (the diff, before its test run), `on =
"every_round"` (after the test run) and `after = "green"` (all must approve for a fix). A
revise sends its points to the writer's next turn; a veto from a role that may veto stops the
solve (`vetoed`). A typed reply that does not validate gets one repair request with the error,
then the solve stops (`invalid_reply`).

The loop knows the order of the steps only: what each role is shown and what its reply means
belong to the role (coder.agents), what it spent to the budget's ledger (coder.budget). A
writer's requests for more of the repository are answered here, from the solve's current copy
(`coder.lookup`), into the writer's next view; a turn that only asks is not a fruitless one."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from coder.agents import Role
from coder.agents.base import ReplyInvalid
from coder.agents.reviewer import ReviewerView
from coder.agents.verdict import Verdict
from coder.agents.writer import Writer, WriterAnswer, WriterView
from coder.budget import Budget
from coder.config import CoderConfig
from coder.context import Attempt
from coder.digest import TestDigest
from coder.edits import unified_diff
from coder.errors import BudgetExhausted, CoderError, InvalidReply, SetupFailed, Vetoed
from coder.lookup import Lookup
from coder.model import Message, Model
from coder.pipeline import Pipeline, Stage, build
from coder.preflight import classify, tail
from coder.repo import RepoFiles
from coder.result import AgentUsage, SetupFailure, SolveResult, TestsSummary
from coder.sandbox import SandboxSession
from coder.setup import Setup
from coder.trace import TraceWriter

MAX_FRUITLESS = 3  # replies in a row with no applicable edit before giving up

ViewT = TypeVar("ViewT")
AnswerT = TypeVar("AnswerT")


def summary(d: TestDigest) -> TestsSummary:
    return TestsSummary(
        passed=d.passed, exit_code=d.exit_code, summary=d.summary, failing=d.failing
    )


@dataclass
class Solver:
    task: str
    repo: RepoFiles
    sandbox: SandboxSession
    #: The model of each role, by the role's name.
    models: dict[str, Model]
    budget: Budget
    trace: TraceWriter
    allow_test_edits: bool = False
    #: The recipe that prepares the sandbox before the first test run (coder.setup), if any.
    setup: Setup | None = None
    #: Called once the setup ran and the first test run collected: the environment is worth
    #: keeping (coder.envs snapshots it).
    on_prepared: Callable[[], Awaitable[None]] | None = None
    #: Who acts when (default: the built-in writer and reviewer).
    pipeline: Pipeline = field(default_factory=lambda: build(CoderConfig()))
    #: False for a candidate (coder.candidates): green tests end the loop, and the
    #: `after = "green"` roles check the chosen candidate only.
    review_green: bool = True
    current: dict[str, str] = field(init=False)
    model_time_s: float = 0.0
    test_time_s: float = 0.0
    result: SolveResult = field(init=False)
    last_output: str = field(init=False, default="")
    #: The first test run's digest and the latest one's (None before they run).
    before: TestDigest | None = field(init=False, default=None)
    latest: TestDigest | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.current = dict(self.repo.text)
        self.result = SolveResult(status="gave_up", trace_id=self.trace.trace_id)

    @property
    def writer(self) -> Writer:
        role = self.pipeline.writer.role
        if not isinstance(role, Writer):
            raise TypeError(f"the pipeline's writer is a {type(role).__name__}")
        return role

    @property
    def diff(self) -> str:
        return unified_diff(self.repo.text, self.current)

    def _structured(self, role: Role[ViewT, AnswerT]) -> bool:
        return any(s.structured for s in self.pipeline.stages if s.name == role.name)

    async def _call(
        self, role: Role[ViewT, AnswerT], messages: list[Message], **extra: bool
    ) -> str:
        """One model call of `role`: room reserved in the budget first (none left: no call),
        charged to the role's ledger entry, traced."""
        model = self.models[role.name]
        chars = sum(len(m["content"]) for m in messages)
        # ~3 characters a token: code and non-English text run denser than prose's ~4, and
        # an estimate short of the real prompt would let concurrent candidates overshoot
        held = await self.budget.hold(role.name, chars // 3 + 1, model.estimate_cost)
        self.budget.prompt(role.name, chars)
        fmt = role.response_format if self._structured(role) else None
        self.trace.event(
            "model.request",
            agent=role.name,
            model=model.name,
            prompt_chars=chars,
            iteration=self.budget.iterations,
            **({"structured": True} if fmt else {}),
            **extra,
        )
        started = time.monotonic()
        try:
            reply = await model.complete(messages, max_tokens=held.cap, response_format=fmt)
        finally:
            self.budget.release(held)
        self.model_time_s += time.monotonic() - started
        self.budget.charge(role.name, reply.usage, cached=reply.cached)
        self.trace.event(
            "model.reply",
            agent=role.name,
            model=reply.model,
            text=reply.text,
            usage=asdict(reply.usage),
            cached=reply.cached,
        )
        return reply.text

    async def _ask(self, role: Role[ViewT, AnswerT], view: ViewT) -> AnswerT:
        """One answer of `role` on `view`, parsed by the role. A typed reply that does not
        validate gets one repair request with the error; a second invalid one is a stop."""
        messages = role.messages(view)
        text = await self._call(role, messages)
        try:
            return role.parse(text)
        except ReplyInvalid as exc:
            first = str(exc)
        self.trace.event("reply.invalid", agent=role.name, error=first, repair=True)
        messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": role.repair(first)},
        ]
        text = await self._call(role, messages, repair=True)
        try:
            return role.parse(text)
        except ReplyInvalid as exc:
            self.trace.event("reply.invalid", agent=role.name, error=str(exc), repair=False)
            raise InvalidReply(
                f"{role.name}'s reply was not valid after one repair: {exc}"
            ) from None

    async def _check(
        self, stages: list[Stage], n: int, before: TestDigest, after: TestDigest | None
    ) -> list[str]:
        """Ask each stage in order; the points of those that did not approve (stops at the
        first veto of a role that may veto)."""
        points: list[str] = []
        for stage in stages:
            found: Verdict = await self._ask(
                stage.role, ReviewerView(self.task, self.diff, after, before)
            )
            self.trace.event(
                "review.verdict",
                iteration=n,
                agent=stage.name,
                verdict=found.word,
                points=found.points,
            )
            if found.word == "VETO" and stage.can_veto:
                raise Vetoed(f"{stage.name} vetoed the change: {found.points}")
            if found.word != "APPROVE":
                label = "" if stage.name == "reviewer" else f"({stage.name}) "
                points.append(label + found.points)
        return points

    async def check_green(self) -> list[str]:
        """The `after = "green"` roles on the current change and the latest test run (a
        candidate's, once chosen): the points of those that did not approve."""
        if self.before is None or self.latest is None:
            raise CoderError("the tests have not run: nothing to check")
        green = self.pipeline.acting("green")
        return await self._check(green, self.budget.iterations, self.before, self.latest)

    def usage(self) -> dict[str, AgentUsage]:
        """Every role's usage, by name."""
        return {s.name: self.budget.entry(s.name).wire() for s in self.pipeline.stages}

    def _lookup(self, answer: WriterAnswer, n: int, view: WriterView) -> int:
        """Answer the writer's requests into its next view, within the request budget;
        traced. How many were answered."""
        granted = self.budget.grant_requests(self.writer.name, len(answer.requests))
        errors = list(answer.request_errors)
        if granted < len(answer.requests):
            errors.append(
                f"the solve's {self.budget.max_requests} requests are spent; not answered: "
                + "; ".join(r.line() for r in answer.requests[granted:])
            )
        started = time.monotonic()
        view.answers = Lookup(self.current).answer(answer.requests[:granted], errors)
        self.budget.entry(self.writer.name).answer_chars.append(len(view.answers))
        self.trace.event(
            "writer.requests",
            iteration=n,
            requests=[r.line() for r in answer.requests],
            answered=granted,
            refused=errors,
            chars=len(view.answers),
            seconds=round(time.monotonic() - started, 4),
        )
        return granted

    async def _test(self) -> TestDigest:
        self.budget.check()
        run = await self.sandbox.run_tests()
        self.test_time_s += run.seconds
        self.last_output = run.output
        self.latest = run.digest
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
        except CoderError as exc:  # each kind its own status (coder.errors)
            self.result.status, self.result.reason = exc.status, str(exc)
            if isinstance(exc, BudgetExhausted):
                self.result.budget = exc.budget
            if isinstance(exc, SetupFailed):
                self.result.setup = exc.failure
        r = self.result
        r.iterations = self.budget.iterations
        r.writer = self.budget.entry(self.writer.name).wire()
        r.reviewer = self.budget.entry("reviewer").wire()
        r.roles = self.usage()
        r.writer_prompt_chars = list(self.budget.entry(self.writer.name).prompt_chars)
        r.wall_time_s = round(time.monotonic() - started, 4)
        r.model_time_s, r.test_time_s = round(self.model_time_s, 4), round(self.test_time_s, 4)
        spent = self.model_time_s + self.test_time_s + r.setup_time_s  # setup: its own figure
        overhead = max(0.0, r.wall_time_s - spent)
        r.overhead_s_per_iteration = round(overhead / max(1, r.iterations), 4)
        r.files_changed = sorted(
            p for p in self.current if self.repo.text.get(p) != self.current[p]
        )
        return r

    async def prepare(self) -> TestDigest:
        """The setup (if any), the first test run and the preflight, alone: what the base
        sandbox of candidates runs before it is kept and forked (coder.candidates)."""
        await self._prepare()
        before = self.before = await self._test()
        self.result.tests_before = self.result.tests_after = summary(before)
        self._preflight(before)
        return before

    async def _prepare(self) -> None:
        """The setup recipe, then the preflight: the first test run must at least collect."""
        if self.setup is not None:
            started = time.monotonic()
            try:
                await self.setup.run(self.sandbox, self.trace, self.result.setup_steps)
            finally:
                self.result.setup_time_s = round(time.monotonic() - started, 4)

    def _preflight(self, before: TestDigest) -> None:
        """An environment error in the first run stops the solve (coder.preflight)."""
        command = self.sandbox.test_command
        found = classify(command, before.exit_code, before.status, self.last_output)
        self.trace.event("preflight", ok=found is None, reason=found.line() if found else "")
        if found is not None:
            raise SetupFailed(
                SetupFailure(
                    step="preflight",
                    command=command,
                    exit_code=before.exit_code,
                    status=before.status,
                    reason=found.line(),
                    output_tail=tail(self.last_output),
                )
            )

    async def _loop(self) -> None:
        await self._prepare()
        before = self.before = await self._test()
        self.result.tests_before = self.result.tests_after = summary(before)
        self._preflight(before)
        if self.setup is not None and self.on_prepared is not None:
            await self.on_prepared()
        if before.passed:
            self.result.status, self.result.reason = "already_passing", "the tests pass already"
            return
        view = WriterView(self.task, before, self.current)
        fruitless = 0
        while True:
            self.budget.start_iteration()
            n = self.budget.iterations
            answer = await self._ask(self.writer, view)
            if answer.gave_up:
                self.result.status, self.result.reason = "gave_up", "the writer gave up"
                return
            view.answers = None
            if answer.only_asks and self._lookup(answer, n, view):
                view.feedback = None
                lines = "; ".join(r.line() for r in answer.requests)
                outcome = f"asked for more (no edit): {lines}"
                view.history.append(Attempt(n, [], outcome))
                continue
            report = answer.apply(self.current, allow_test_edits=self.allow_test_edits)
            view.feedback = answer.feedback(report)
            self.trace.event(
                "edits.applied",
                iteration=n,
                applied=report.applied,
                failed=report.failed,
                refused=report.refused,
                files=sorted(report.changed),
            )
            self.current.update(report.changed)
            if (answer.requests or answer.request_errors) and not answer.only_asks:
                self._lookup(answer, n, view)  # answered from the copy with the edits
            if not report.changed:
                fruitless += 1
                view.history.append(Attempt(n, [], "no edit applied"))
                if fruitless >= MAX_FRUITLESS:
                    self.result.status = "gave_up"
                    self.result.reason = f"{fruitless} answers in a row had no applicable edit"
                    return
                continue
            fruitless = 0
            edit_points = await self._check(self.pipeline.acting("edit"), n, before, None)
            await self.sandbox.write(report.changed)
            view.digest = await self._test()
            self.result.tests_after = summary(view.digest)
            view.history.append(Attempt(n, sorted(report.changed), view.digest.short()))
            points = edit_points + await self._check(
                self.pipeline.acting("every_round"), n, before, view.digest
            )
            if not view.digest.passed:
                view.review = "\n".join(points) or None
                continue
            if not self.review_green:
                self.result.status, self.result.reason = "fixed", "tests pass (a candidate)"
                return
            points += await self.check_green()
            if not points:
                self.result.status, self.result.reason = "fixed", "tests pass; reviewer approved"
                return
            view.review = "\n".join(points)
            view.history[-1].outcome += "; reviewer asked to revise"
