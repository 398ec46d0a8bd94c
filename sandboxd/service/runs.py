"""Admission and bookkeeping of runs: caps and tenant quotas, a bounded number at once and a
bounded queue (then 503), every run recorded in the store from start to end.

A request is digested once (`PreparedRun`), before it is admitted, so that the audit record
of the HTTP request and the run's row keep the same digest, and a refused request is still
recorded as it was asked. A backend's `RunResult` is never changed after it returns: the
result the caller gets is built from it once, with what the daemon adds (trace and sandbox
ids, why a streamed run was cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandboxd.backends.base import Backend, CacheMount, RunControl, SandboxMount
from sandboxd.backends.host.workspace import CACHE_ENV
from sandboxd.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    QuotaExceeded,
    SandboxdError,
)
from sandboxd.models import RunList, RunRecord, RunRequest, RunResult, RunSummary
from sandboxd.observability import Metrics, Tracer
from sandboxd.service import queries
from sandboxd.service.auth import Principal
from sandboxd.service.caches import DownloadCaches
from sandboxd.service.follow import OutputLog, tee
from sandboxd.service.policy import apply_caps, check_network, request_digest
from sandboxd.service.store import Store
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.service.runs")


CLIENT_GONE = "cancelled: its client disconnected from the stream; the tree was killed"


@dataclass
class StreamedControl(RunControl):
    """The control of a streamed run, whose client may go away: that cancels the run like
    `DELETE /v1/runs/{id}` (status `cancelled`, `message` saying why); `interrupted` stays
    for runs the daemon itself died or stopped during."""

    client_gone: bool = False


@dataclass(frozen=True)
class PreparedRun:
    """A run request as asked (in a sandbox: with the sandbox's defaults merged in) and its
    digest, taken once: hashes and shapes, never secrets, for the audit trail and the run's
    row. The caps are applied when it is admitted (`RunManager.run`)."""

    request: RunRequest
    digest: dict[str, Any]
    sandbox_id: str | None = None

    @classmethod
    def of(cls, request: RunRequest, sandbox_id: str | None = None) -> PreparedRun:
        return cls(request, request_digest(request), sandbox_id)


def run_summary(result: RunResult) -> dict[str, Any]:
    """What the audit record of a run's HTTP request keeps of its result."""
    return {
        "status": result.status,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "wall_time_s": result.usage.wall_time_s,
    }


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


@dataclass
class _InFlight:
    tenant: str
    control: RunControl
    done: asyncio.Future[RunResult]
    output: OutputLog


class RunManager:
    """Runs requests on their backend with at most `max_concurrent_runs` at once."""

    def __init__(
        self,
        settings: Settings,
        backends: dict[str, Backend],
        store: Store,
        metrics: Metrics,
        tracer: Tracer,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.tracer = tracer
        self.caches = DownloadCaches(settings)
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._tenant_load: Counter[str] = Counter()
        self._inflight: dict[str, _InFlight] = {}
        self.active = 0
        self.queued = 0

    def backend_for(self, name: str | None, image: str | None) -> Backend:
        """The backend a request asked for (or the default); refuses what it cannot do."""
        name = name or self.settings.default_backend
        backend = self.backends.get(name)
        if backend is None:
            raise InvalidRequest(f"backend {name!r} is not enabled on this daemon", field="backend")
        if image is not None and not backend.runs_images:
            raise InvalidRequest(
                f"the {backend.name} backend runs no images; leave `image` out or choose a "
                "backend that does (docker)",
                field="image",
            )
        return backend

    def _admit(self, tenant: str) -> None:
        cap = self.settings.quota_for(tenant).max_concurrent_runs
        if cap is not None and self._tenant_load[tenant] >= cap:
            raise QuotaExceeded(
                f"tenant {tenant!r} already has {self._tenant_load[tenant]} runs in progress, "
                "its maximum; retry later",
                field="max_concurrent_runs",
            )
        if self._slots.locked() and self.queued >= self.settings.max_queued_runs:
            raise Overloaded(
                f"{self.active} runs are in progress and {self.queued} are queued; retry later"
            )

    def _gauges(self) -> None:
        self.metrics.active_runs.set(self.active)
        self.metrics.queue_depth.set(self.queued)

    async def run(
        self,
        prepared: PreparedRun,
        *,
        principal: Principal,
        trace_id: str,
        sandbox: SandboxMount | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        asked = prepared.request
        request = asked.model_copy(
            update={"limits": apply_caps(asked.limits, self.settings.max_limits)}
        )
        check_network(request.network, self.settings.egress)
        backend = self.backend_for(request.backend, request.image)
        tenant = principal.tenant
        self._admit(tenant)
        self._tenant_load[tenant] += 1  # before any await: admission and count are one step
        try:
            cache = None
            if request.download_cache:
                cache = await self.caches.mount_for(tenant)
                request = request.model_copy(update={"env": {**CACHE_ENV, **request.env}})
            self.queued += 1
            self._gauges()
            try:
                await self._slots.acquire()
            finally:
                self.queued -= 1
            self.active += 1
            self._gauges()
            try:
                return await self._execute(
                    backend,
                    request,
                    prepared,
                    tenant,
                    trace_id,
                    sandbox,
                    control or RunControl(),
                    cache,
                )
            finally:
                self.active -= 1
                self._slots.release()
                self._gauges()
        finally:
            self._tenant_load[tenant] -= 1

    async def _execute(
        self,
        backend: Backend,
        request: RunRequest,
        prepared: PreparedRun,
        tenant: str,
        trace_id: str,
        sandbox: SandboxMount | None,
        control: RunControl,
        cache: CacheMount | None,
    ) -> RunResult:
        run_id, sandbox_id = new_run_id(), prepared.sandbox_id
        await self.store.run_started(run_id, tenant, sandbox_id, prepared.digest, trace_id)
        with self._in_flight(run_id, tenant, control) as done:
            if control.on_start is not None:
                control.on_start(run_id)
            try:
                with self.tracer.span(
                    "sandboxd.run",
                    trace_id,
                    run_id=run_id,
                    tenant=tenant,
                    language=request.language,
                    backend=backend.name,
                ):
                    ran = await backend.run(
                        run_id, request, sandbox=sandbox, control=control, cache=cache
                    )
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "error"
                await asyncio.shield(self.store.run_finished(run_id, status, None))
                raise
            result = self._final(ran, trace_id, sandbox_id, control)
            self.store.run_finished(run_id, result.status, result.model_dump_json())
            done.set_result(result)
        self.metrics.runs.labels(result.status, backend.name).inc()
        self.metrics.run_duration.labels(backend.name).observe(result.usage.wall_time_s)
        log.info(
            "run %s finished: %s",
            run_id,
            result.status,
            extra={
                "run_id": run_id,
                "tenant": tenant,
                "status": result.status,
                "sandbox_id": sandbox_id,
            },
        )
        return result

    @staticmethod
    def _final(
        ran: RunResult, trace_id: str, sandbox_id: str | None, control: RunControl
    ) -> RunResult:
        """The result as the caller gets it: the backend's, with what the daemon knows."""
        update: dict[str, Any] = {"trace_id": trace_id, "sandbox_id": sandbox_id}
        gone = isinstance(control, StreamedControl) and control.client_gone
        if ran.status == "cancelled" and gone:
            update["message"] = CLIENT_GONE
        return ran.model_copy(update=update)

    @contextlib.contextmanager
    def _in_flight(
        self, run_id: str, tenant: str, control: RunControl
    ) -> Iterator[asyncio.Future[RunResult]]:
        """The run, findable by `cancel` while it runs; its result, or why there is none."""
        done: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        output = OutputLog()
        tee(control, output)  # followers (`follow`) see what the run prints
        self._inflight[run_id] = _InFlight(tenant, control, done, output)
        try:
            yield done
        except BaseException as exc:
            done.set_exception(SandboxdError(f"run {run_id} ended without a result: {exc!r}"))
            done.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            del self._inflight[run_id]
            output.close()

    def follow(
        self, run_id: str, principal: Principal
    ) -> tuple[OutputLog, asyncio.Future[RunResult]] | None:
        """A run in flight that the caller may see: its output log and its result to come;
        None when it is not in flight (finished, another tenant's, or unknown)."""
        entry = self._inflight.get(run_id)
        if entry is None or not (entry.tenant == principal.tenant or principal.can("admin")):
            return None
        return entry.output, entry.done

    async def cancel(self, run_id: str, principal: Principal) -> RunResult:
        """Kill a run in progress and return its (partial) result."""
        entry = self._inflight.get(run_id)
        if entry is None or not (entry.tenant == principal.tenant or principal.can("admin")):
            row = await self.store.call(queries.get_run, run_id)
            if row is not None and (row.tenant == principal.tenant or principal.can("admin")):
                raise Conflict(f"run {run_id!r} is not in progress (status {row.status})")
            raise NotFound(f"no run {run_id!r}")
        entry.control.cancel.set()
        return await asyncio.shield(entry.done)

    async def page(
        self, tenant: str | None, after: str | None, limit: int, **filters: str | None
    ) -> RunList:
        """Recorded runs, newest first (of `tenant`, if given); `filters`: status, language,
        backend, trace_id. `after`: the last run of the previous page."""
        rows = await self.store.call(
            queries.run_page, tenant=tenant, after=after, limit=limit, **filters
        )
        runs = []
        for row in rows:
            digest = json.loads(row.request_digest)
            result = RunResult.model_validate_json(row.result) if row.result else None
            runs.append(
                RunSummary(
                    id=row.id,
                    tenant=row.tenant,
                    status=row.status,
                    language=digest.get("language"),
                    backend=result.backend if result else None,
                    sandbox_id=row.sandbox_id,
                    trace_id=row.trace_id,
                    exit_code=result.exit_code if result else None,
                    wall_time_s=result.usage.wall_time_s if result else None,
                    created_at=_time(row.created_at),
                    finished_at=_time(row.finished_at) if row.finished_at else None,
                )
            )
        return RunList(runs=runs, next_after=runs[-1].id if len(runs) == limit else None)

    async def get(self, run_id: str, principal: Principal) -> RunRecord:
        """A recorded run of the caller's tenant, or any for admin (else: not found)."""
        row = await self.store.call(queries.get_run, run_id)
        if row is None or not (row.tenant == principal.tenant or principal.can("admin")):
            raise NotFound(f"no run {run_id!r}")
        return RunRecord(
            id=row.id,
            status=row.status,
            sandbox_id=row.sandbox_id,
            trace_id=row.trace_id,
            created_at=_time(row.created_at),
            finished_at=_time(row.finished_at) if row.finished_at else None,
            result=RunResult.model_validate_json(row.result) if row.result else None,
            request=json.loads(row.request_digest),
        )
