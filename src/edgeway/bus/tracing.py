"""Request id and trace context on events, and the spans around publishing and handling them.

Every event carries, besides its own metadata, ``x-request-id``, ``traceparent`` and (when the
trace has one) ``tracestate``: the W3C Trace Context headers. They travel unchanged through every
broker (NATS message headers, AMQP headers, the memory transport's envelopes) and through the
outbox, which keeps them in columns of the row until the relay publishes it.

**Publishing.** An event made now (``bus.publish``, ``outbox.add``) continues the current hop
(:func:`edgeway.observability.context.current_hop`): the HTTP request being served (the service
kit's server span), the event being handled, the saga step being run. Where there is none, inside
a handler the received event's context is continued (same request id, a child ``traceparent``),
then the header source is asked (:func:`set_header_source`), and failing that a new trace starts,
so every event can be followed. Trace headers given explicitly (``headers=``) win when they are
well-formed. With a tracer (the service kit gives the bus and the outbox its own), the publish is
a PRODUCER span, a child of the hop (``create <channel>`` when the outbox records the event,
``publish <channel>`` for a direct publish), and the event names that span as its parent.

**Handling.** Each event is handled inside :class:`Consuming`: with a tracer, a CONSUMER span
``process <channel>`` whose parent is the event's ``traceparent``, so the handler's work is part
of the publisher's trace; the event's request id (a new one when it came without) and the hop's
trace and span ids are bound for the log lines, so whatever the handler logs, calls or publishes
joins the trace. A batch handler (``subscribe_batch``) gets one span *linked* to every event's
context instead, since a batch has no single parent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edgeway.bus.events import H_REQUEST_ID, H_TRACEPARENT, H_TRACESTATE, Envelope
from edgeway.observability.context import (
    HAVE_OPENTELEMETRY,
    REQUEST_ID_ATTRIBUTE,
    current_hop,
    parse_tracestate,
    remote_context,
    span_traceparent,
)
from edgeway.observability.ids import (
    TraceParent,
    new_request_id,
    new_traceparent,
    parse_traceparent,
    valid_request_id,
)
from edgeway.observability.logs import request_id_var, span_id_var, trace_id_var

if HAVE_OPENTELEMETRY:
    from opentelemetry import trace as otel

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = [
    "TRACE_HEADERS",
    "Consuming",
    "consuming_batch",
    "current_inbound",
    "outgoing_headers",
    "parent_context",
    "produce",
    "set_header_source",
]

HeaderSource = Callable[[], Mapping[str, str]]
TRACE_HEADERS = (H_REQUEST_ID, H_TRACEPARENT, H_TRACESTATE)

_inbound: ContextVar[Envelope | None] = ContextVar("edgeway_bus_inbound", default=None)
_source: HeaderSource | None = None


def set_header_source(source: HeaderSource | None) -> None:
    """Install a function returning the current request's ``x-request-id``/``traceparent``
    (``tracestate``), asked when no hop is bound: for code that keeps its request context
    elsewhere than the log context or OpenTelemetry."""
    global _source
    _source = source


def current_inbound() -> Envelope | None:
    """The event being handled in this task, if any."""
    return _inbound.get()


def _request_id(value: str | None) -> str | None:
    if value is None or not valid_request_id(value.encode("utf-8", "replace")):
        return None
    return value


def parent_context() -> tuple[str, TraceParent, str | None]:
    """The request id, the parent span (as a traceparent) and the ``tracestate`` of whatever
    starts now: an event, or a saga. See the module docstring for the order they are looked for."""
    hop = current_hop()
    inbound = _inbound.get()
    fallback: Mapping[str, str]
    if inbound is not None:
        fallback = inbound.headers
    elif _source is not None:
        fallback = _source()
    else:
        fallback = {}
    request_id = hop.request_id or _request_id(fallback.get(H_REQUEST_ID)) or new_request_id().decode()
    if hop.traceparent is not None:
        return request_id, hop.traceparent, hop.tracestate
    parent = parse_traceparent(fallback.get(H_TRACEPARENT, "").encode("utf-8", "replace"))
    if parent is not None:
        return request_id, parent.child(), parse_tracestate(fallback.get(H_TRACESTATE))
    return request_id, new_traceparent(), None


def outgoing_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for an event published now: the trace context, then the caller's ``extra``.

    An ``x-request-id``, ``traceparent`` or ``tracestate`` in ``extra`` replaces the context's
    when it is well-formed and is dropped otherwise (a malformed id must not reach the outbox's
    columns or the next service).
    """
    request_id, parent, state = parent_context()
    if extra:
        given_id = _request_id(extra.get(H_REQUEST_ID))
        if given_id is not None:
            request_id = given_id
        given_parent = parse_traceparent(extra.get(H_TRACEPARENT, "").encode("utf-8", "replace"))
        if given_parent is not None:
            parent, state = given_parent, None  # the hop's tracestate belongs to the hop's trace
        if H_TRACESTATE in extra:
            state = parse_tracestate(extra[H_TRACESTATE]) or state
    out = {H_REQUEST_ID: request_id, H_TRACEPARENT: parent.encode().decode()}
    if state is not None:
        out[H_TRACESTATE] = state
    if extra:
        for name, value in extra.items():
            if name not in TRACE_HEADERS:
                out[name] = value
    return out


def produce(
    tracer: Tracer, headers: dict[str, str], operation: str, channel: str, *, count: int = 1, system: str = ""
) -> None:
    """Record a publish as a PRODUCER span and make it the parent named in ``headers``.

    ``headers`` come from :func:`outgoing_headers` (their traceparent, well-formed, is the
    span's parent). The span ends at once: it marks when the event was made; the consumer's span
    shows when it was handled.
    """
    parent = parse_traceparent(headers[H_TRACEPARENT].encode())
    context = remote_context(parent, headers.get(H_TRACESTATE)) if parent is not None else None
    attributes: dict[str, Any] = {
        "messaging.operation.type": operation,
        "messaging.destination.name": channel,
        REQUEST_ID_ATTRIBUTE: headers[H_REQUEST_ID],
    }
    if system:
        attributes["messaging.system"] = system
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    span = tracer.start_span(
        f"{operation} {channel}", context=context, kind=otel.SpanKind.PRODUCER, attributes=attributes
    )
    span.end()
    headers[H_TRACEPARENT] = span_traceparent(span).encode().decode()


class Consuming:
    """``with Consuming(envelope, group, system, tracer):`` handle one event as a hop of its trace.

    See the module docstring. A class rather than a generator context manager: it runs for every
    event handled, and without a tracer it costs a parse and three context variables.
    """

    __slots__ = ("_envelope", "_group", "_inbound", "_span", "_system", "_tokens", "_tracer")

    def __init__(self, envelope: Envelope, group: str, system: str, tracer: Tracer | None) -> None:
        self._envelope = envelope
        self._group = group
        self._system = system
        self._tracer = tracer
        self._span: Any = None

    def __enter__(self) -> None:
        envelope = self._envelope
        headers = envelope.headers
        request_id = _request_id(headers.get(H_REQUEST_ID)) or new_request_id().decode()
        parent = parse_traceparent(headers.get(H_TRACEPARENT, "").encode("utf-8", "replace"))
        tracer = self._tracer
        if tracer is None:
            own = parent.child() if parent is not None else new_traceparent()
            trace_id, span_id = own.trace_id.decode(), own.parent_id.decode()
        else:
            context = remote_context(parent, headers.get(H_TRACESTATE)) if parent is not None else None
            span = tracer.start_span(
                f"process {envelope.channel}",
                context=context,
                kind=otel.SpanKind.CONSUMER,
                attributes={
                    "messaging.operation.type": "process",
                    "messaging.system": self._system,
                    "messaging.destination.name": envelope.channel,
                    "messaging.consumer.group.name": self._group,
                    "messaging.message.id": envelope.id,
                    "edgeway.event_type": envelope.type,
                    "edgeway.attempt": envelope.attempt,
                    REQUEST_ID_ATTRIBUTE: request_id,
                },
            )
            self._span = otel.use_span(span, end_on_exit=True, record_exception=True)
            self._span.__enter__()
            ids = span.get_span_context()
            trace_id, span_id = format(ids.trace_id, "032x"), format(ids.span_id, "016x")
        self._tokens = (request_id_var.set(request_id), trace_id_var.set(trace_id), span_id_var.set(span_id))
        self._inbound = _inbound.set(envelope)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        request_token, trace_token, span_token = self._tokens
        span_id_var.reset(span_token)
        trace_id_var.reset(trace_token)
        request_id_var.reset(request_token)
        if self._span is not None:
            span, self._span = self._span, None
            span.__exit__(exc_type, exc, tb)  # records the exception and ends the span
        _inbound.reset(self._inbound)


@contextmanager
def consuming_batch(
    envelopes: Sequence[Envelope], channel: str, group: str, system: str, tracer: Tracer | None
) -> Iterator[None]:
    """Handle a batch of events in one CONSUMER span linked to each event's context (with a
    tracer; without one the batch runs as it is: its events have no single request or trace)."""
    if tracer is None:
        yield
        return
    links = []
    for envelope in envelopes:
        parent = parse_traceparent((envelope.traceparent or "").encode("utf-8", "replace"))
        if parent is not None:
            remote = otel.get_current_span(remote_context(parent, envelope.tracestate)).get_span_context()
            links.append(otel.Link(remote, {"messaging.message.id": envelope.id}))
    ids = {envelope.request_id for envelope in envelopes}
    request_id = _request_id(ids.pop()) if len(ids) == 1 else None
    attributes: dict[str, Any] = {
        "messaging.operation.type": "process",
        "messaging.system": system,
        "messaging.destination.name": channel,
        "messaging.consumer.group.name": group,
        "messaging.batch.message_count": len(envelopes),
    }
    if request_id is not None:
        attributes[REQUEST_ID_ATTRIBUTE] = request_id
    span = tracer.start_span(
        f"process {channel}", kind=otel.SpanKind.CONSUMER, links=links, attributes=attributes
    )
    ids_now = span.get_span_context()
    tokens: tuple[Token[str | None], ...] = (
        request_id_var.set(request_id),
        trace_id_var.set(format(ids_now.trace_id, "032x")),
        span_id_var.set(format(ids_now.span_id, "016x")),
    )
    try:
        with otel.use_span(span, end_on_exit=True, record_exception=True):
            yield
    finally:
        span_id_var.reset(tokens[2])
        trace_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
