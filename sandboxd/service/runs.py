"""Admission and bookkeeping of runs: caps and tenant quotas, a bounded number at once and a
bounded queue (then 503), every run recorded in the store from start to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from sandboxd.backends.base import Backend, RunControl, SandboxMount
from sandboxd.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    QuotaExceeded,
    SandboxdError,
)
from sandboxd.models import RunRequest, RunResult
from sandboxd.observability import Metrics, Tracer
from sandboxd.service.auth import Principal
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


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


@dataclass
class _InFlight:
    tenant: str
    control: RunControl
    done: asyncio.Future[RunResult]


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
        request: RunRequest,
        *,
        principal: Principal,
        trace_id: str,
        sandbox: SandboxMount | None = None,
        sandbox_id: str | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        request = request.model_copy(
            update={"limits": apply_caps(request.limits, self.settings.max_limits)}
        )
        check_network(request.network, self.settings.egress)
        backend = self.backend_for(request.backend, request.image)
        tenant = principal.tenant
        self._admit(tenant)
        self._tenant_load[tenant] += 1
        try:
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
                    backend, request, tenant, trace_id, sandbox, sandbox_id, control or RunControl()
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
        tenant: str,
        trace_id: str,
        sandbox: SandboxMount | None,
        sandbox_id: str | None,
        control: RunControl,
    ) -> RunResult:
        run_id = new_run_id()
        await self.store.run_started(run_id, tenant, sandbox_id, request_digest(request), trace_id)
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
                    result = await backend.run(run_id, request, sandbox=sandbox, control=control)
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "error"
                await asyncio.shield(self.store.run_finished(run_id, status, None))
                raise
            result.trace_id, result.sandbox_id = trace_id, sandbox_id
            gone = isinstance(control, StreamedControl) and control.client_gone
            if result.status == "cancelled" and gone:
                result.message = CLIENT_GONE
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

    @contextlib.contextmanager
    def _in_flight(
        self, run_id: str, tenant: str, control: RunControl
    ) -> Iterator[asyncio.Future[RunResult]]:
        """The run, findable by `cancel` while it runs; its result, or why there is none."""
        done: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._inflight[run_id] = _InFlight(tenant, control, done)
        try:
            yield done
        except BaseException as exc:
            done.set_exception(SandboxdError(f"run {run_id} ended without a result: {exc!r}"))
            done.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            del self._inflight[run_id]

    async def cancel(self, run_id: str, principal: Principal) -> RunResult:
        """Kill a run in progress and return its (partial) result."""
        entry = self._inflight.get(run_id)
        if entry is None or not (entry.tenant == principal.tenant or principal.can("admin")):
            row = await self.store.call(
                lambda db: db.execute(
                    "SELECT tenant, status FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
            )
            if row is not None and (row["tenant"] == principal.tenant or principal.can("admin")):
                raise Conflict(f"run {run_id!r} is not in progress (status {row['status']})")
            raise NotFound(f"no run {run_id!r}")
        entry.control.cancel.set()
        return await asyncio.shield(entry.done)
