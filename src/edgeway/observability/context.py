"""The trace context of the current hop: what a call or a message made now carries.

A hop is the unit of work being done now: an HTTP request a service serves, a message a consumer
handles, a saga step. Whatever it sends on — an HTTP call, an event, an event written to the
outbox and published later — carries its request id (``x-request-id``) and its W3C trace context
(``traceparent``, ``tracestate``), so the next hop joins the same trace.

:func:`current_hop` finds it in one place, in this order:

1. the current OpenTelemetry span, when OpenTelemetry is installed and a span is current (the
   service kit's server span, a consumer span, a saga step's span, a span of your own);
2. otherwise the ids bound for the log lines (:func:`edgeway.observability.logs.request_context`),
   which every edgeway scope binds, with or without OpenTelemetry.

OpenTelemetry is optional here: a gateway-only install has none, and its bus (revocations pushed
to the gateway) still carries the context through the log ids.

``tracestate`` is checked against W3C Trace Context before it is passed on (at most 32 members
and 512 characters, keys and values of the allowed characters); a malformed one is dropped
silently rather than logged, since any client can send one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from edgeway.observability.ids import TraceParent, new_span_id
from edgeway.observability.logs import request_id_var, span_id_var, trace_id_var

try:  # optional: the service extra installs it, a gateway-only install does not
    from opentelemetry import trace as otel

    HAVE_OPENTELEMETRY = True
except ImportError:  # pragma: no cover - a gateway-only install (tests/packaging)
    HAVE_OPENTELEMETRY = False

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

__all__ = [
    "HAVE_OPENTELEMETRY",
    "MAX_TRACESTATE",
    "REQUEST_ID_ATTRIBUTE",
    "Hop",
    "current_hop",
    "parse_tracestate",
    "remote_context",
    "span_traceparent",
    "span_tracestate",
]

# The span attribute that names the request id (X-Request-ID) on every span edgeway makes for a
# request, a message or a saga step, so a trace can be found from a log line's request id.
REQUEST_ID_ATTRIBUTE: Final = "edgeway.request_id"
MAX_TRACESTATE: Final = 512
_MAX_MEMBERS: Final = 32
# W3C Trace Context level 1, section 3.3: key = simple-key / tenant@system; value = up to 256
# printable ASCII characters except "," and "=", not ending in a space.
_MEMBER: Final = re.compile(
    r"(?:[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


@dataclass(frozen=True, slots=True)
class Hop:
    """The current hop's ids: ``traceparent`` names its own span (the parent of what it sends)."""

    request_id: str | None
    traceparent: TraceParent | None
    tracestate: str | None = None


def parse_tracestate(value: str | bytes | None) -> str | None:
    """A well-formed ``tracestate`` normalised (members trimmed, joined by ``,``), else None."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(text) > MAX_TRACESTATE:
        return None
    members = [m.strip(" \t") for m in text.split(",")]
    members = [m for m in members if m]  # empty members are allowed and ignored
    if not members or len(members) > _MAX_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        if _MEMBER.fullmatch(member) is None:
            return None
        key = member.split("=", 1)[0]
        if key in keys:  # a key may appear once
            return None
        keys.add(key)
    return ",".join(members)


def current_hop() -> Hop:
    """The current hop (see the module docstring); ``traceparent`` is None outside any trace."""
    request_id = request_id_var.get()
    if HAVE_OPENTELEMETRY:
        context = otel.get_current_span().get_span_context()
        if context.is_valid:
            parent = TraceParent(
                format(context.trace_id, "032x").encode(),
                format(context.span_id, "016x").encode(),
                format(int(context.trace_flags), "02x").encode(),
            )
            return Hop(request_id, parent, context.trace_state.to_header() or None)
    trace_id = trace_id_var.get()
    if trace_id is None:
        return Hop(request_id, None)
    span_id = span_id_var.get()
    parent_id = span_id.encode() if span_id else new_span_id()
    return Hop(request_id, TraceParent(trace_id.encode(), parent_id, b"01"))


def remote_context(parent: TraceParent, tracestate: str | bytes | None = None) -> Context:
    """An OpenTelemetry context whose current span is the remote caller's span.

    A well-formed ``tracestate`` travels with it (spans started in the context inherit it); a
    malformed one is dropped (:func:`parse_tracestate`).
    """
    # Only called with a tracer in hand, so OpenTelemetry is installed.
    state = parse_tracestate(tracestate)
    span_context = otel.SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.parent_id, 16),
        is_remote=True,
        trace_flags=otel.TraceFlags(int(parent.flags, 16)),
        trace_state=otel.TraceState.from_header([state]) if state is not None else None,
    )
    return otel.set_span_in_context(otel.NonRecordingSpan(span_context))


def span_traceparent(span: Span) -> TraceParent:
    """The traceparent naming ``span`` as the parent."""
    ctx = span.get_span_context()
    return TraceParent(
        format(ctx.trace_id, "032x").encode(),
        format(ctx.span_id, "016x").encode(),
        format(int(ctx.trace_flags), "02x").encode(),
    )


def span_tracestate(span: Span) -> str | None:
    """The span's ``tracestate`` header value, None when it has none."""
    return span.get_span_context().trace_state.to_header() or None
