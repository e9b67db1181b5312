"""Request id and trace context on events.

An event published while handling another event continues that event's trace: same request id,
a child ``traceparent``. Outside a handler the bus asks the header source the service kit
installs (the current HTTP request's ids); failing that it starts a new trace, so every event
can be followed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from edgeway.bus.events import H_REQUEST_ID, H_TRACEPARENT, Envelope
from edgeway.observability.ids import new_request_id, new_traceparent, parse_traceparent

HeaderSource = Callable[[], Mapping[str, str]]

_inbound: ContextVar[Envelope | None] = ContextVar("edgeway_bus_inbound", default=None)
_source: HeaderSource | None = None


def set_header_source(source: HeaderSource | None) -> None:
    """Install the function that returns the current request's ``x-request-id``/``traceparent``."""
    global _source
    _source = source


@contextmanager
def handling(envelope: Envelope) -> Iterator[None]:
    """Mark ``envelope`` as the message being handled in this task."""
    token = _inbound.set(envelope)
    try:
        yield
    finally:
        _inbound.reset(token)


def current_inbound() -> Envelope | None:
    return _inbound.get()


def outgoing_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for an event published now: trace context first, then the caller's ``extra``."""
    out: dict[str, str] = {}
    inbound = _inbound.get()
    if inbound is not None:
        parent = inbound.headers
    elif _source is not None:
        parent = _source()
    else:
        parent = {}
    out[H_REQUEST_ID] = parent.get(H_REQUEST_ID) or new_request_id().decode()
    trace = parse_traceparent(parent.get(H_TRACEPARENT, "").encode())
    out[H_TRACEPARENT] = (trace.child() if trace is not None else new_traceparent()).encode().decode()
    if extra:
        out.update(extra)
    return out
