"""Best of N: independent writer loops ("candidates") run concurrently, each in its own
sandbox, each with its own sampling settings; the best is chosen by the tests, a vote over
their normalised changes and the reviewer (coder.select).

Sandboxes: when the repository has a setup, it runs once, in a base sandbox that is then kept
as the prepared environment's snapshot (coder.envs) — or the kept one is used — and every
candidate starts from a fork of it. Without one (nothing to set up, a sandboxd that coder
started and that keeps nothing, or a fork the daemon refuses) a candidate gets a fresh
sandbox set up as a single solve's. A candidate whose sandbox fails stops alone: the others
go on. Test runs across candidates are held to the daemon's concurrent runs.

Budgets: one `Pool` (coder.budget) for all, failing closed across the concurrent loops;
iterations and requests are each candidate's own; usage is reported per candidate and summed
(coder.tally). The `after = "green"` roles check ranked groups in order, not every candidate:
the first approved is chosen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coder import envs, tally
from coder.budget import Budget, Pool
from coder.config import CoderConfig
from coder.errors import CoderError, SandboxError, Vetoed
from coder.loop import Solver, summary
from coder.model import Model
from coder.pipeline import Pipeline, Stage, writer_stages
from coder.repo import RepoFiles
from coder.result import Candidate, SolveResult
from coder.sandbox import SandboxSession
from coder.select import Facts, coverage, fingerprint, rank
from coder.setup import Setup
from coder.trace import TraceWriter
from sandboxd.client import Client
from sandboxd.errors import SandboxdError
from sandboxd.models import Snapshot


@dataclass
class Base:
    """The prepared environment the candidates fork, if any."""

    env: envs.EnvPlan | None = None
    snapshot: Snapshot | None = None
    reused: bool = False


@dataclass
class Run:
    stage: Stage
    report: Candidate
    session: SandboxSession
    solver: Solver | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class Candidates:
    cfg: CoderConfig
    root: Path
    files: RepoFiles
    setup: Setup | None
    client: Client
    #: Whether coder started the sandboxd for this solve (it keeps no environments).
    local: bool
    pipeline: Pipeline
    #: The models of a candidate's roles, given its number and its writer stage.
    models_for: Callable[[int, Stage], dict[str, Model]]
    trace: TraceWriter
    result: SolveResult = field(init=False)
    pool: Pool = field(init=False)
    gate: asyncio.Semaphore = field(init=False)
    runs: list[Run] = field(default_factory=list)
    #: The selection stopped on an error (the budget, the model): the result says it.
    halted: bool = False
    diff: str = ""
    changed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.result = SolveResult(status="gave_up", trace_id=self.trace.trace_id)
        cfg = self.cfg
        self.pool = Pool(cfg.max_tokens, cfg.max_cost_usd, cfg.max_wall_s)

    @property
    def room_mib(self) -> int:
        return self.cfg.setup_disk_mib if self.setup is not None else 0

    def _session(self) -> SandboxSession:
        session = SandboxSession(self.client, self.cfg.test, self.cfg.test_limits)
        session.gate = self.gate
        return session

    def _budget(self) -> Budget:
        cfg = self.cfg
        return Budget(
            cfg.max_iterations,
            cfg.max_tokens,
            cfg.max_cost_usd,
            cfg.max_wall_s,
            cfg.max_requests,
            pool=self.pool,
            shares=self.pipeline.shares(),
        )

    async def _slots(self) -> int:
        try:
            return max(1, (await self.client.info()).max_concurrent_runs)
        except SandboxdError:
            return 1

    async def _base(self) -> Base | None:
        """Prepare the environment once and keep it (or find it kept); None when the solve
        stops here (the setup failed, or the tests pass already)."""
        setup, cfg = self.setup, self.cfg
        if setup is None or self.local:
            return Base()
        sources = setup.index.urls + setup.allow
        env = await envs.plan(
            self.client, self.root.name, self.files.text, setup.steps, sources, reuse=cfg.reuse_env
        )
        snap = env.snapshot.id if env.snapshot else None
        self.trace.event("env.plan", key=env.key, snapshot_id=snap)
        if env.snapshot is not None:
            return Base(env, env.snapshot, reused=True)
        session = self._session()
        try:
            files = self.files
            await session.start(files.all_bytes(), files.executable, extra_disk_mib=self.room_mib)
            self.trace.event("sandbox.ready", sandbox_id=session.sandbox_id, url=self.client.url)
            solver = Solver(cfg.task, files, session, {}, self._budget(), self.trace, setup=setup)
            try:
                before = await solver.prepare()
            finally:
                self.result.setup_steps = solver.result.setup_steps
                self.result.setup_time_s = solver.result.setup_time_s
                self.result.tests_before = solver.result.tests_before
            if before.passed:
                self.result.status, self.result.reason = "already_passing", "the tests pass already"
                return None
            paths = sorted(files.all_bytes())
            kept = await envs.keep(session, env, paths, self.trace, ttl_s=cfg.env_ttl_s)
        except CoderError as exc:
            self._stopped(exc)
            return None
        finally:
            await session.close()
        return Base(env, kept)

    def _stopped(self, exc: CoderError) -> None:
        r = self.result
        r.status, r.reason = exc.status, str(exc)
        r.budget = getattr(exc, "budget", None)
        failure = getattr(exc, "failure", None)
        if failure is not None:
            r.setup = failure

    async def _candidate(self, run: Run, base: Base) -> None:
        """One candidate, start to end; its failures are its own."""
        n = run.report.index
        trace = self.trace.tagged(candidate=n)
        files = self.files
        try:
            forked = False
            if base.env is not None and base.snapshot is not None:
                plan = envs.EnvPlan(base.env.key, base.env.repo, base.snapshot)
                forked = await envs.start_from(
                    run.session,
                    plan,
                    files.all_bytes(),
                    files.executable,
                    trace,
                    extra_disk_mib=self.room_mib,
                )
            if not forked:
                await run.session.start(
                    files.all_bytes(), files.executable, extra_disk_mib=self.room_mib
                )
            run.report.sandbox_id = run.session.sandbox_id
            run.report.from_snapshot = base.snapshot.id if forked and base.snapshot else None
            trace.event(
                "candidate.start",
                sandbox_id=run.session.sandbox_id,
                from_snapshot=run.report.from_snapshot,
                model=run.stage.model,
                temperature=run.stage.temperature,
                seed=run.stage.seed,
            )
            run.solver = Solver(
                self.cfg.task,
                files,
                run.session,
                self.models_for(n, run.stage),
                self._budget(),
                trace,
                allow_test_edits=self.cfg.allow_test_edits,
                setup=None if forked else self.setup,
                pipeline=self.pipeline,
                review_green=False,
            )
            res = await run.solver.run()
            run.report.status = "green" if res.status == "fixed" else res.status
            run.report.reason = res.reason
        except CoderError as exc:  # its sandbox refused or failed, its model not to be had
            run.report.status = "green" if exc.status == "fixed" else exc.status
            run.report.reason = str(exc)
        except asyncio.CancelledError:
            run.report.status = "stopped"
            run.report.reason = f"{self.cfg.stop_after_green} candidates were green already"
        finally:
            run.report.wall_time_s = round(time.monotonic() - run.started, 4)
            self._fill(run)
            trace.event(
                "candidate.end",
                status=run.report.status,
                reason=run.report.reason,
                iterations=run.report.iterations,
                files=run.report.files_changed,
                usage={k: v.model_dump() for k, v in run.report.usage.items()},
            )

    def _fill(self, run: Run) -> None:
        """The candidate's report from its loop, as far as it got."""
        r, s = run.report, run.solver
        if s is None:
            return
        res = s.result
        r.model_time_s, r.test_time_s = round(s.model_time_s, 4), round(s.test_time_s, 4)
        r.overhead_s = round(max(0.0, r.wall_time_s - s.model_time_s - s.test_time_s), 4)
        r.iterations = s.budget.iterations
        r.tests_before, r.tests_after = res.tests_before, res.tests_after
        r.diff = s.diff
        r.files_changed = sorted(p for p in s.current if s.repo.text.get(p) != s.current[p])
        r.usage = s.usage()
        changed: dict[str, str | None] = {p: s.current[p] for p in r.files_changed}
        r.fingerprint = fingerprint(changed) if changed else None

    async def _race(self, base: Base) -> None:
        """Every candidate at once; with `stop_after_green`, the rest stopped once enough
        are green."""
        tasks = {asyncio.create_task(self._candidate(run, base)): run for run in self.runs}
        pending = set(tasks)
        green = 0
        want = self.cfg.stop_after_green
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            crashed = [t.exception() for t in done if not t.cancelled() and t.exception()]
            if crashed:  # a bug, not a candidate's failure: loudly, the others stopped
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise crashed[0]  # type: ignore[misc]
            green += sum(tasks[t].report.status == "green" for t in done)
            if want is not None and green >= want and pending:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                pending = set()

    async def _full_suite(self, run: Run) -> Facts:
        facts = Facts(
            run.report.index,
            run.report.status == "green",
            fingerprint=run.report.fingerprint or "",
            status=run.report.status,
        )
        full = self.cfg.full_test
        if not facts.green or full is None or full == self.cfg.test:
            return facts
        try:
            done = await run.session.run_tests(full)
        except SandboxError as exc:
            facts.full_passed, facts.full_failing = False, [f"the run failed: {exc}"]
            return facts
        run.report.full_suite = summary(done.digest)
        facts.full_passed, facts.full_failing = done.digest.passed, list(done.digest.failing)
        self.trace.tagged(candidate=run.report.index).event(
            "tests.run",
            iteration=run.report.iterations,
            suite="full",
            passed=done.digest.passed,
            exit_code=done.digest.exit_code,
            summary=done.digest.summary,
            failing=done.digest.failing,
            seconds=round(done.seconds, 4),
        )
        return facts

    async def _select(self) -> Run | None:
        facts = [await self._full_suite(run) for run in self.runs]
        ranking = rank(facts)
        self.result.coverage = coverage(facts)
        for n, why in ranking.excluded.items():
            self.runs[n - 1].report.why = why
        eligible = sum(g.votes for g in ranking.groups)
        chosen: Run | None = None
        for g in ranking.groups:
            for m in g.members:
                self.runs[m - 1].report.votes = g.votes
            if chosen is not None:
                for m in g.members:
                    self.runs[m - 1].report.why = (
                        f"{g.votes} of {eligible} eligible votes; candidate "
                        f"{chosen.report.index} ranked higher and was approved"
                    )
                continue
            run = self.runs[g.first - 1]
            if run.solver is None:
                continue
            vote = f"{g.votes} of {eligible} eligible votes"
            try:
                points = await run.solver.check_green()
            except Vetoed as exc:
                self._not_chosen(g.members, f"{vote}; {exc}")
                self.result.status, self.result.reason = "vetoed", str(exc)
                continue
            except CoderError as exc:  # the budget, the model, an invalid reply: a stop
                self._fill(run)
                self._stopped(exc)
                self.halted = True
                self._not_chosen(g.members, f"{vote}; not checked: {exc}")
                return None
            self._fill(run)  # the reviewer's usage is the candidate's
            if points:
                self._not_chosen(g.members, f"{vote}; asked to revise: " + " ".join(points))
                continue
            chosen = run
            run.report.chosen = True
            tie = [x.first for x in ranking.groups if x.votes == g.votes and x is not g]
            tied = f" (tied with candidate(s) {tie})" if tie else ""
            run.report.why = f"chosen: {vote}{tied}; the checking roles approved"
            for m in g.members[1:]:
                self.runs[m - 1].report.why = f"the same change as candidate {g.first} (chosen)"
        return chosen

    def _not_chosen(self, members: list[int], why: str) -> None:
        for m in members:
            self.runs[m - 1].report.why = why

    def _outcome(self, chosen: Run | None) -> None:
        r = self.result
        tally.totals(r, [run.report for run in self.runs], self.pipeline.writer.name)
        if chosen is not None and chosen.solver is not None:
            tally.chosen(r, chosen.report)
            self.diff = chosen.report.diff
            self.changed = {p: chosen.solver.current[p] for p in r.files_changed}
        elif not self.halted and r.status != "vetoed":  # else a stop already said
            budgets = [run.solver.result.budget for run in self.runs if run.solver]
            tally.none_chosen(r, [run.report for run in self.runs], budgets)

    async def run(self) -> SolveResult:
        started = time.monotonic()
        cfg = self.cfg
        self.gate = asyncio.Semaphore(await self._slots())
        stages = writer_stages(cfg, self.pipeline)
        self.trace.event(
            "candidates.start",
            candidates=len(stages),
            stop_after_green=cfg.stop_after_green,
            full_test=cfg.full_test,
            writers=[
                {"model": st.model, "temperature": st.temperature, "seed": st.seed} for st in stages
            ],
        )
        try:
            try:
                base = await self._base()
            except SandboxdError as exc:
                self._stopped(SandboxError(f"sandboxd: {exc.message}"))
                base = None
            if base is not None:
                for n, st in enumerate(stages, 1):
                    report = Candidate(
                        index=n,
                        status="stopped",
                        model=st.model,
                        temperature=st.temperature,
                        seed=st.seed,
                    )
                    self.runs.append(Run(st, report, self._session()))
                await self._race(base)
                self.result.coverage = coverage(
                    [Facts(r.report.index, r.report.status == "green") for r in self.runs]
                )
                chosen = await self._select()
                self._outcome(chosen)
                if base.env is not None:
                    self.result.env = envs.state(base.env, base.reused, base.snapshot)
        finally:
            for run in self.runs:
                await run.session.close()
        self.result.wall_time_s = round(time.monotonic() - started, 4)
        self.trace.event(
            "candidates.selected",
            chosen=self.result.chosen_candidate,
            coverage=self.result.coverage,
            status=self.result.status,
            candidates=[
                c.model_dump(include={"index", "status", "votes", "fingerprint", "chosen", "why"})
                for c in self.result.candidates
            ],
        )
        return self.result
