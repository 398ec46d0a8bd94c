"""Admission of runs: caps checked, a bounded number at once, a bounded queue, then 503."""

from __future__ import annotations

import asyncio
import logging
import secrets

from sandboxd.backends.base import Backend
from sandboxd.errors import Overloaded
from sandboxd.models import RunRequest, RunResult
from sandboxd.policy import apply_caps
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.runs")


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


class RunManager:
    """Runs requests on the backend with at most `max_concurrent_runs` at once."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self.active = 0
        self.queued = 0

    async def run(self, request: RunRequest) -> RunResult:
        limits = apply_caps(request.limits, self.settings.max_limits)
        request = request.model_copy(update={"limits": limits})
        if self._slots.locked() and self.queued >= self.settings.max_queued_runs:
            raise Overloaded(
                f"{self.active} runs are in progress and {self.queued} are queued; retry later"
            )
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.active += 1
        run_id = new_run_id()
        try:
            result = await self.backend.run(run_id, request)
        finally:
            self.active -= 1
            self._slots.release()
        log.info(
            "run %s language=%s status=%s wall=%.3fs",
            run_id,
            request.language,
            result.status,
            result.usage.wall_time_s,
        )
        return result
