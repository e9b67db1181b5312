"""OpenTelemetry spans of a gateway: imported only when ``telemetry.tracing.enabled`` (it needs
the ``tracing`` extra), so a gateway without tracing neither imports nor pays for it.

Per request a SERVER span, continuing the client's W3C ``traceparent`` when it sent a valid one
(the sampler follows its sampled flag when ``parent_based``), else a new trace sampled at
``sample_ratio``; the request's ids (response ``traceparent``, access log, what services see)
are the span's. Per upstream attempt a CLIENT span, child of the server span for a proxied
request, or of the INTERNAL span of its call for an aggregate or endpoint call; the attempt's
own id goes upstream in ``traceparent`` (with the client's ``tracestate`` passed on), so the
service's span is the attempt's child. A request that is not sampled sends its ``traceparent``
with the flag cleared, so the services behind do not record it either.

The sampling decision is the SDK sampler's, taken before the SDK is asked: by the trace id's
low 64 bits against the ratio's bound (``TraceIdRatioBased``), or by the caller's flag
(``ParentBased``). An unsampled request then costs two comparisons, not a trip through the SDK's
``start_span`` (about 90,000 interpreted instructions: at a 1 % ratio that was +38 % per request,
docs/benchmarks.md). A sampled new trace keeps the trace id the gateway drew for it (the SDK's
id generator hands it over), so the SDK's sampler, asking again, agrees.

Spans are made with the SDK's tracer and sampler; they are exported by OTLP over HTTP in
batches (:class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor`), to ``endpoint`` or the
standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from edgeway.gateway.telemetry.config import TracingSettings
from edgeway.gateway.telemetry.meters import OUTCOMES, outcome_index
from edgeway.http.exchange import Exchange
from edgeway.observability.ids import TraceParent
from edgeway.observability.tracing import otlp_endpoint

if TYPE_CHECKING:
    from edgeway.gateway.upstream.call import UpstreamCall
    from edgeway.gateway.upstream.clusters import Endpoint

__all__ = ["CallTrace", "GatewayTracer"]

log = logging.getLogger("edgeway.gateway")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


def _hex(span_context: SpanContext) -> tuple[bytes, bytes, bytes]:
    return (
        b"%032x" % span_context.trace_id,
        b"%016x" % span_context.span_id,
        b"01" if span_context.trace_flags.sampled else b"00",
    )


def _tracestate(ex: Exchange) -> TraceState | None:
    for name, value in ex.headers:
        if name.lower() == b"tracestate":
            try:
                return TraceState.from_header([value.decode("latin-1")])
            except ValueError:
                return None
    return None


def _error_type(outcome: int | BaseException) -> str | None:
    if isinstance(outcome, BaseException):
        return type(outcome).__name__
    return str(outcome) if outcome >= 500 else None


class _DrawnTraceIds(RandomIdGenerator):
    """The SDK's trace ids: the one the gateway drew for the request it starts a trace for
    (``next``, used once), else random ones."""

    def __init__(self) -> None:
        self.next: int | None = None

    def generate_trace_id(self) -> int:
        drawn, self.next = self.next, None
        return drawn if drawn is not None else super().generate_trace_id()


class GatewayTracer:
    """The gateway's tracer: its provider (resource, sampler, processors) and the spans of the
    requests in flight."""

    def __init__(
        self, settings: TracingSettings, service: str, *, processor: SpanProcessor | None = None
    ) -> None:
        ratio = TraceIdRatioBased(settings.sample_ratio)
        sampler: Sampler = ParentBased(root=ratio) if settings.parent_based else ratio
        # What the sampler decides, decided here first (see the module docstring).
        self._bound = ratio.bound  # sampled when the trace id's low 64 bits are below it
        self._parent_based = settings.parent_based
        self._ids = _DrawnTraceIds()
        self.provider = TracerProvider(
            sampler=sampler,
            resource=Resource.create({"service.name": settings.service_name or service}),
            id_generator=self._ids,
        )
        self.tracer = self.provider.get_tracer("edgeway.gateway")
        self.exporting = False
        if processor is not None:
            self.add_processor(processor)
        else:
            endpoint = settings.endpoint
            if endpoint is None and otlp_endpoint() is not None:
                endpoint = ""  # the exporter reads the OTEL_EXPORTER_OTLP_* variables itself
            if endpoint is not None:
                # Imported here: the exporter pulls in protobuf and requests.
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(
                    endpoint=endpoint or None,
                    headers=settings.headers or None,
                    timeout=float(settings.timeout),
                )
                self.add_processor(BatchSpanProcessor(exporter))
        # The server span of each request in flight, by the id of the TraceParent the request
        # carries (the runtime's handle on it from arrival to the access log).
        self._open: dict[int, Span] = {}

    def add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)
        self.exporting = True

    # -- the request ---------------------------------------------------------------------------
    def sampled(self, incoming: TraceParent | None, own: TraceParent) -> bool:
        """The sampler's decision for a request: the caller's flag (``parent_based``), else the
        ratio by trace id. ``own``: the ids the request goes on with (a child of ``incoming``,
        or a new trace)."""
        if incoming is not None and self._parent_based:
            return int(incoming.flags, 16) & 1 == 1
        return int(own.trace_id[16:], 16) < self._bound

    def begin(self, ex: Exchange, incoming: TraceParent | None, own: TraceParent) -> TraceParent:
        """The request's server span; the trace context the request goes on with (its ids).
        ``own``: the ids it goes on with when it is not sampled."""
        if not self.sampled(incoming, own):
            return own if own.flags == b"00" else TraceParent(own.trace_id, own.parent_id, b"00")
        if incoming is not None:
            parent = SpanContext(
                trace_id=int(incoming.trace_id, 16),
                span_id=int(incoming.parent_id, 16),
                is_remote=True,
                trace_flags=_SAMPLED if int(incoming.flags, 16) & 1 else _UNSAMPLED,
                trace_state=_tracestate(ex),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        else:
            context = Context()
            self._ids.next = int(own.trace_id, 16)  # the trace id sampled by
        method = ex.method.decode("latin-1")
        # The span starts when the request arrived (``ex.started``, perf_counter time).
        started = time.time_ns() - int((time.perf_counter() - ex.started) * 1e9)
        span = self.tracer.start_span(
            method,
            context=context,
            kind=SpanKind.SERVER,
            start_time=started,
            attributes={
                "http.request.method": method,
                "url.path": ex.path.decode("latin-1"),
                "url.scheme": ex.scheme.decode("latin-1"),
                "server.address": ex.host.decode("latin-1"),
                "client.address": ex.client,
                "edgeway.request_id": ex.request_id.decode("latin-1"),
            },
        )
        tp = TraceParent(*_hex(span.get_span_context()))
        if span.is_recording():
            self._open[id(tp)] = span
        return tp

    def end(self, ex: Exchange, route_id: str | None, tp: TraceParent) -> None:
        span = self._open.pop(id(tp), None)
        if span is None:
            return  # not sampled
        status = ex.status
        if route_id is not None:
            span.update_name(f"{ex.method.decode('latin-1')} {route_id}")
            span.set_attribute("http.route", route_id)
        span.set_attribute("http.response.status_code", status)
        # A request id the client sent is known only once the ids are fixed (before begin).
        span.set_attribute("edgeway.request_id", ex.request_id.decode("latin-1"))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))
        span.end()

    # -- calls to services -----------------------------------------------------------------------
    def call(self, parent: TraceParent, service: str, name: str | None = None) -> CallTrace | None:
        """The trace of one upstream call made for the request whose context is ``parent``;
        None when that request is not sampled. ``name``: an aggregate's or endpoint's call,
        which gets an INTERNAL span of its own above its attempts."""
        if parent.flags != b"01":
            return None
        parent_context = SpanContext(
            trace_id=int(parent.trace_id, 16),
            span_id=int(parent.parent_id, 16),
            is_remote=False,
            trace_flags=_SAMPLED,
        )
        context = trace.set_span_in_context(NonRecordingSpan(parent_context))
        call_span: Span | None = None
        if name is not None:
            call_span = self.tracer.start_span(
                f"call {name}",
                context=context,
                kind=SpanKind.INTERNAL,
                attributes={"edgeway.call": name, "peer.service": service},
            )
            context = trace.set_span_in_context(call_span)
        return CallTrace(self.tracer, context, service, call_span)

    def shutdown(self) -> None:
        for span in self._open.values():
            span.end()
        self._open.clear()
        self.provider.shutdown()  # flushes what the batch processor holds


class CallTrace:
    """The spans of one upstream call: a CLIENT span per attempt (and the call's own span)."""

    __slots__ = ("_attempt", "_call", "_context", "_service", "_tracer", "attempts")

    def __init__(self, tracer: trace.Tracer, context: Context, service: str, call_span: Span | None) -> None:
        self._tracer = tracer
        self._context = context
        self._service = service
        self._call = call_span
        self._attempt: Span | None = None
        self.attempts = 0

    def attempt(self, call: UpstreamCall, ep: Endpoint) -> bytes:
        """Start the span of an attempt on ``ep``; the traceparent the request carries."""
        if self._attempt is not None:  # an attempt not reported (a stale connection resent)
            self._attempt.end()
        method = call.method.decode("latin-1")
        host, port = ep.address
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": host,
            "server.port": port,
            "peer.service": self._service,
            "edgeway.instance": ep.label,
        }
        if self.attempts:
            attributes["http.request.resend_count"] = self.attempts
        self.attempts += 1
        span = self._attempt = self._tracer.start_span(
            f"{method} {self._service}", context=self._context, kind=SpanKind.CLIENT, attributes=attributes
        )
        return TraceParent(*_hex(span.get_span_context())).encode()

    def attempt_over(self, outcome: int | BaseException) -> None:
        span = self._attempt
        if span is None:
            return
        self._attempt = None
        _outcome(span, outcome)
        span.end()

    def call_over(self, outcome: int | BaseException) -> None:
        self.attempt_over(outcome)
        span = self._call
        if span is not None:
            self._call = None
            _outcome(span, outcome)
            span.end()


def _outcome(span: Span, outcome: int | BaseException) -> None:
    if isinstance(outcome, int):
        if outcome:
            span.set_attribute("http.response.status_code", outcome)
    else:
        span.record_exception(outcome)
    span.set_attribute("edgeway.outcome", OUTCOMES[outcome_index(outcome)])
    error = _error_type(outcome)
    if error is not None:
        span.set_attribute("error.type", error)
        detail = str(outcome) if isinstance(outcome, BaseException) else None
        span.set_status(Status(StatusCode.ERROR, detail))
