"""Saga metrics, log fields and trace context.

Every log line the orchestrator writes carries ``saga_id``, ``saga`` and, inside a step, ``step``
and ``attempt`` as extra fields of the common JSON schema; the request id and trace id of the
request that started the saga are bound for the whole run, and each step attempt runs in its own
span (a child of the starter's span, with the starter's ``tracestate``), made current, so
service-kit clients called from a step send ``X-Request-ID``/``traceparent`` and the events it
publishes (directly or through the outbox) carry context that joins the starter's trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer, TraceState

from edgeway.bus import tracing as bus_tracing
from edgeway.observability.context import (
    REQUEST_ID_ATTRIBUTE,
    parse_tracestate,
    remote_context,
    span_traceparent,
)
from edgeway.observability.ids import TraceParent, new_traceparent, parse_traceparent
from edgeway.observability.logs import request_context
from edgeway.observability.metrics import Metrics


class SagaMetrics:
    """The orchestrator's Prometheus metrics, registered in the service's :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        by_saga = ("saga",)
        self.started = metrics.counter("edgeway_sagas_started_total", "Sagas started.", by_saga)
        self.completed = metrics.counter(
            "edgeway_sagas_completed_total", "Sagas that ran every step.", by_saga
        )
        self.compensated = metrics.counter(
            "edgeway_sagas_compensated_total", "Sagas that failed and were fully compensated.", by_saga
        )
        self.failed = metrics.counter(
            "edgeway_sagas_failed_total",
            "Sagas whose compensation gave up: the system may be inconsistent, an operator must look.",
            by_saga,
        )
        self.resumed = metrics.counter(
            "edgeway_sagas_resumed_total",
            "Unfinished sagas this instance took over (after a crash, a restart or a lost lease elsewhere).",
            by_saga,
        )
        self.step_retries = metrics.counter(
            "edgeway_saga_step_retries_total",
            "Step actions and compensations tried again after a retryable failure.",
            ("saga", "step", "phase"),
        )
        self.step_duration = metrics.histogram(
            "edgeway_saga_step_duration_seconds",
            "Duration of one step attempt (action or compensation), by outcome.",
            ("saga", "step", "phase", "outcome"),
        )
        self.in_progress = metrics.gauge("edgeway_sagas_in_progress", "Sagas this process is driving now.")


def start_ids() -> tuple[str, str, str | None]:
    """Request id, traceparent and tracestate for a saga started now.

    The current hop's (:func:`edgeway.bus.tracing.parent_context`): inside an HTTP request the
    request's span, inside a bus handler the event's consumer span, inside another saga's step
    that step's span; it becomes the parent of every step. Otherwise new ones, so every saga can
    be followed.
    """
    request_id, parent, tracestate = bus_tracing.parent_context()
    return request_id, parent.encode().decode(), tracestate


def log_fields(saga_id: str, saga: str, step: str | None = None, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"saga_id": saga_id, "saga": saga}
    if step is not None:
        fields["step"] = step
    fields.update(more)
    return fields


def _parent(traceparent: str | None) -> TraceParent | None:
    return parse_traceparent(traceparent.encode()) if traceparent else None


@contextmanager
def saga_scope(request_id: str | None, traceparent: str | None) -> Iterator[None]:
    """Bind the starter's request id and trace for log lines written while driving the saga."""
    parent = _parent(traceparent)
    trace_id = parent.trace_id.decode() if parent is not None else None
    span_id = parent.parent_id.decode() if parent is not None else None
    with request_context(request_id, trace_id, span_id):
        yield


@contextmanager
def step_scope(
    request_id: str | None,
    traceparent: str | None,
    name: str,
    tracer: Tracer | None,
    tracestate: str | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[str]:
    """Run a step attempt as a child span of the saga's trace; yields the step's traceparent.

    With an OpenTelemetry ``tracer`` the span is real (exported with the service's traces);
    without one the step still gets its own span id, made current as a non-recording span, so
    its calls, events and logs join the trace under it.
    """
    parent = _parent(traceparent)
    if tracer is None:
        own = parent.child() if parent is not None else new_traceparent()
        state = parse_tracestate(tracestate)
        span: Span = NonRecordingSpan(
            SpanContext(
                trace_id=int(own.trace_id, 16),
                span_id=int(own.parent_id, 16),
                is_remote=False,
                trace_flags=TraceFlags(int(own.flags, 16)),
                trace_state=TraceState.from_header([state]) if state is not None else None,
            )
        )
    else:
        context = remote_context(parent, tracestate) if parent is not None else None
        span = tracer.start_span(name, context=context, kind=SpanKind.INTERNAL)
        if request_id is not None:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        for key, value in (attributes or {}).items():
            span.set_attribute(key, value)
        own = span_traceparent(span)
    with (
        trace.use_span(span, end_on_exit=True, record_exception=True),
        request_context(request_id, own.trace_id.decode(), own.parent_id.decode()),
    ):
        yield own.encode().decode()
