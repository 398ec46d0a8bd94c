"""The Studio overview's figures: what runs now, the warm pools, and the last hour of runs.

Read from the run manager (in memory), the store (the runs table) and the daemon's metrics
(requests refused since start), so nothing new is counted for it.
"""

from __future__ import annotations

import time

from sandboxd.models import Stats
from sandboxd.observability import Metrics
from sandboxd.service import queries
from sandboxd.service.runs import RunManager

HOUR_S = 3600.0


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0 < q <= 1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.4999)))
    return round(ordered[rank - 1], 4)


def rejected_counts(metrics: Metrics) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in metrics.rejected.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["code"]] = int(sample.value)
    return counts


async def stats(runs: RunManager, metrics: Metrics, now: float | None = None) -> Stats:
    now = time.time() if now is None else now
    rows = await runs.store.call(queries.runs_since, now - HOUR_S)
    by_status: dict[str, int] = {}
    per_minute = [0] * 60
    latencies = []
    for status, created, finished in rows:
        by_status[status] = by_status.get(status, 0) + 1
        per_minute[max(0, min(59, 59 - int((now - created) // 60)))] += 1
        if finished is not None:
            latencies.append(finished - created)
    return Stats(
        active_runs=runs.active,
        queued_runs=runs.queued,
        warm_pools={
            f"{name}/{profile}": pool
            for name, backend in runs.backends.items()
            for profile, pool in backend.pool_stats().items()
        },
        runs_last_hour=by_status,
        latency_p50_s=percentile(latencies, 0.5),
        latency_p90_s=percentile(latencies, 0.9),
        rejected=rejected_counts(metrics),
        runs_per_minute=per_minute,
    )
