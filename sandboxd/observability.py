"""Trace ids (W3C traceparent), structured JSON logs, Prometheus metrics, optional OpenTelemetry."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


def parse_traceparent(header: str | None) -> str | None:
    """The trace id of a valid W3C traceparent header, else None."""
    if not header:
        return None
    m = TRACEPARENT_RE.match(header.strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the trace id of the request that logged it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = trace_id_var.get()
        if trace_id:
            entry["trace_id"] = trace_id
        for key in ("run_id", "sandbox_id", "tenant", "status"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Metrics:
    """The daemon's Prometheus metrics, in a registry of its own (no process-wide state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "sandboxd_runs_total",
            "Runs finished, by status and backend",
            ["status", "backend"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "sandboxd_run_duration_seconds",
            "Wall time of runs",
            ["backend"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "sandboxd_queue_depth", "Runs admitted and waiting for a slot", registry=self.registry
        )
        self.active_runs = Gauge(
            "sandboxd_active_runs", "Runs executing now", registry=self.registry
        )
        self.active_sandboxes = Gauge(
            "sandboxd_active_sandboxes", "Persistent sandboxes that exist", registry=self.registry
        )
        self.warm_pool = Gauge(
            "sandboxd_warm_pool",
            "Warm pools: sandboxes ready and in preparation, target size, hits, misses, failures",
            ["measure", "pool"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "sandboxd_rejected_requests_total",
            "Requests refused, by error code",
            ["code"],
            registry=self.registry,
        )


class Tracer:
    """OpenTelemetry spans when an OTLP endpoint is configured; nothing otherwise."""

    def __init__(self, otlp_endpoint: str | None) -> None:
        self._tracer: Any = None
        self._provider: Any = None
        if otlp_endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError as exc:
                raise ValueError(
                    "otlp_endpoint is set but OpenTelemetry is not installed: "
                    "pip install 'sandboxd[otel]'"
                ) from exc

            provider = TracerProvider(resource=Resource.create({"service.name": "sandboxd"}))
            exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
            self._provider = provider
            self._tracer = provider.get_tracer("sandboxd")

    @contextmanager
    def span(self, name: str, trace_id: str, **attributes: Any) -> Iterator[None]:
        if self._tracer is None:
            yield
            return
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        parent = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(secrets.token_hex(8), 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        start = time.time_ns()
        with self._tracer.start_as_current_span(name, context=ctx, start_time=start) as span:
            for key, value in attributes.items():
                span.set_attribute(key, value)
            yield

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
