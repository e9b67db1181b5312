"""OpenTelemetry set-up and W3C trace-context helpers.

Every app gets its own :class:`~opentelemetry.sdk.trace.TracerProvider` named after the service
(``service.name``). Spans are always created, so the trace and span ids in the logs and on
outgoing calls are real; they are *exported* only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, by OTLP over HTTP, in batches. The exporter reads
the standard ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, compression) itself.

Header parsing uses :mod:`edgeway.observability.ids`, the same code the gateway engine uses, so
a traceparent the gateway accepts is one the services accept. ``remote_context``,
``span_traceparent`` and ``span_tracestate`` live in :mod:`edgeway.observability.context` (which
needs only the OpenTelemetry API) and are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind

from edgeway.observability.context import (
    REQUEST_ID_ATTRIBUTE,
    remote_context,
    span_traceparent,
    span_tracestate,
)
from edgeway.observability.ids import new_span_id, parse_traceparent
from edgeway.observability.logs import span_id_var, trace_id_var

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "Tracing",
    "otlp_endpoint",
    "outgoing_traceparent",
    "remote_context",
    "span_traceparent",
    "span_tracestate",
]

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def otlp_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in _ENDPOINT_VARS:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def outgoing_traceparent() -> str | None:
    """The traceparent to put on a call made now: the current span, else the bound ids.

    Falls back to the trace id in the log context with a fresh span id, so calls made outside
    any span (a background task started by a request) still join the request's trace.
    """
    span = trace.get_current_span()
    if span.get_span_context().is_valid:
        return span_traceparent(span).encode().decode()
    trace_id = trace_id_var.get()
    if trace_id is None:
        return None
    return f"00-{trace_id}-{new_span_id().decode()}-01"


class Tracing:
    """One service's tracer provider, tracer and exporter."""

    def __init__(
        self,
        service: str,
        *,
        exporter: SpanExporter | None = None,
        processor: SpanProcessor | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.exporting = False
        if processor is not None:
            self.provider.add_span_processor(processor)
            self.exporting = True
        elif exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
            self.exporting = True
        elif otlp_endpoint(environ) is not None:
            # Imported lazily: the exporter pulls in protobuf and requests, which a service
            # that does not export should not pay for at start-up.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self.exporting = True
        self.tracer = self.provider.get_tracer("edgeway.service")

    def start_server_span(
        self,
        name: str,
        traceparent: bytes | None,
        tracestate: bytes | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Span:
        """A SERVER span continuing the caller's trace when its traceparent is valid (with the
        caller's ``tracestate`` when that is well-formed), with ``attributes`` known at its start."""
        parent = parse_traceparent(traceparent) if traceparent else None
        context = remote_context(parent, tracestate) if parent is not None else None
        return self.tracer.start_span(name, context=context, kind=SpanKind.SERVER, attributes=attributes)

    def start_client_span(self, name: str) -> Span:
        return self.tracer.start_span(name, kind=SpanKind.CLIENT)

    @staticmethod
    def bind(span: Span) -> None:
        """Put the span's ids into the log context."""
        ctx = span.get_span_context()
        trace_id_var.set(format(ctx.trace_id, "032x"))
        span_id_var.set(format(ctx.span_id, "016x"))

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporter (call once, at shutdown)."""
        self.provider.force_flush()
        self.provider.shutdown()
