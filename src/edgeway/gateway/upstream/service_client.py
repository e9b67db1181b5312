"""Calls from the gateway to a service whose whole (JSON) answer the gateway reads: the engine
under aggregate endpoints and under the clients Python endpoints get.

It runs on the same clusters as the proxy — the service's balancer, its connection pools and its
timeouts — and on the same upstream exchange, :class:`~edgeway.gateway.upstream.call.UpstreamCall`
(admission, instance choice, retries, deadlines: see there), not httpx: an aggregate makes
several upstream exchanges per client request, so their cost decides its throughput.

A call is started synchronously (:func:`start_call`) and its reply awaited later
(``UpstreamCall.reply``). When the picked instance has an idle pooled connection — the steady
state — starting writes the request at once, without a task: an aggregate starts all its
independent calls, then awaits them, and they run in parallel without paying for a task each.
Only a call that must open (or wait for) a connection, or wait for a concurrency slot, gets a
task to do that. A refusal is a :class:`~edgeway.gateway.upstream.resilient.Refused` error (503),
never sent. A per-call ``timeout`` replaces the service's ``total``; an endpoint deadline
(``deadline=``, loop time) shortens the budget retries may use and the ``X-Edgeway-Deadline-Ms``
every attempt carries; ``UpstreamCall.fail`` ends a call when it passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.gateway.filters.auth.config import GatewayAuth
from edgeway.gateway.telemetry.meters import CallTracing, ServiceMeter
from edgeway.gateway.upstream.call import (
    DEFAULT_MAX_BODY,
    CallLimits,
    ResponseTooLarge,
    ServiceReply,
    UpstreamCall,
)
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.config import BASE_FORWARD_HEADERS
from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.gateway.upstream.resilient import NoInstance, Refused
from edgeway.http.errors import (
    InstanceDown,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTlsError,
)
from edgeway.http.headers import reason_phrase
from edgeway.http.outgoing import UnsafeRequest, check_request
from edgeway.observability.ids import new_span_id
from edgeway.resilience.guard import ServiceGuard

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import GatewayConfig

_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})

__all__ = [
    "DEFAULT_MAX_BODY",
    "CallLimits",
    "NoInstance",
    "ResponseTooLarge",
    "ServiceReply",
    "UnsafeRequest",
    "UpstreamCall",
    "failure_code",
    "start_call",
]


def failure_code(exc: UpstreamError) -> str:
    """A short, stable name for why a call got no usable answer (``_meta`` and problems carry it)."""
    if isinstance(exc, Refused):
        return exc.code
    if isinstance(exc, UpstreamTimeout):
        return "deadline" if exc.phase == "deadline" else "timeout"
    if isinstance(exc, UpstreamTlsError):
        return "tls_failed"
    if isinstance(exc, UpstreamConnectError):
        return "connect_failed"
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, InstanceDown):
        return "instance_down"
    if isinstance(exc, ResponseTooLarge):
        return "too_large"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol_error"
    return "reset"


def start_call(
    cluster: Cluster,
    method: bytes,
    target: bytes,
    headers: bytes,
    body: bytes | None = None,
    limits: CallLimits | None = None,
    *,
    guard: ServiceGuard[Endpoint] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    deadline: float | None = None,
    meter: ServiceMeter | None = None,
    trace: CallTracing | None = None,
) -> UpstreamCall:
    """Send a request to an instance of ``cluster`` now; await ``.reply()`` for the answer.

    ``target`` is the path and query; ``headers`` a block of ``name: value\\r\\n`` lines (Host,
    the framing and ``X-Edgeway-Deadline-Ms`` are added here). A method, target or header line
    the server would refuse from a client raises :class:`UnsafeRequest`, and nothing is sent.
    ``guard``: the service's, from
    :func:`~edgeway.gateway.upstream.resilient.service_guard`. ``loop``: the running loop, when the caller
    has it at hand (asking for it costs a system call). ``deadline``: loop time the call must be
    over by, when something shorter than its own timeout bounds it. ``meter``, ``trace``: the
    service's metrics and the call's spans (:mod:`edgeway.gateway.telemetry`); with ``trace``
    each attempt carries its own ``traceparent``, so ``headers`` must not hold one.

    A call that cannot be sent (its guard refused it, no instance is available) is returned
    failed: its ``reply()`` raises the refusal.
    """
    # Every byte of the request line and headers, whoever built them, is held to what the
    # server accepts from a client: a CR/LF from a value would split the request in two.
    check_request(method, target, headers)
    loop = loop or asyncio.get_running_loop()
    call = UpstreamCall(cluster, guard, method, limits or CallLimits.of(cluster), loop, loop.time(), deadline)
    call.meter = meter
    call.trace = trace
    call.line = method + b" " + target + b" HTTP/1.1\r\nhost: "
    if body is not None:
        call.tail = headers + b"content-length: %d\r\n\r\n" % len(body) + body
    else:
        call.tail = headers + (b"content-length: 0\r\n\r\n" if method in _WITH_BODY else b"\r\n")
    try:
        if not call.admit():  # waits for a concurrency slot
            call.task = loop.create_task(call.admit_and_send())
            return call
        call.attempt(call.pick())
    except Refused as exc:
        call.error = exc
    return call


# -- what every call of a request carries -------------------------------------------------


def common_headers(ctx: RequestContext, forwarding: Forwarding) -> bytes:
    """Header lines every call made for this request carries: the request id, who the client
    is (the forwarding headers, by the proxy's rule: see :mod:`edgeway.gateway.upstream.forwarding`) and
    that JSON is wanted."""
    ex = ctx.ex
    return b"".join(
        (b"x-request-id: ", ex.request_id, b"\r\n", forwarding.lines_for(ex), b"accept: application/json\r\n")
    )


def child_traceparent(ctx: RequestContext) -> bytes:
    """A traceparent line for one call: this request's trace, a new span for the call."""
    span = ctx.span
    return b"traceparent: 00-" + span.trace_id + b"-" + new_span_id() + b"-" + span.flags + b"\r\n"


# The headers the client_cert filter sets from a verified client certificate
# (edgeway.gateway.tls.peer, which loads cryptography: not imported here).
CLIENT_CERT_HEADERS = (
    "x-edgeway-client-cert-subject",
    "x-edgeway-client-cert-issuer",
    "x-edgeway-client-cert-sans",
    "x-edgeway-client-cert-sha256",
)


def forward_names(
    configured: Sequence[str] | None, auth: GatewayAuth | None, *, client_certs: bool = False
) -> frozenset[bytes]:
    """The client headers a call copies: ``configured``, or by default the identity headers the
    auth filter sets (only a gateway with ``auth`` strips clients' copies of them, so without it
    none are forwarded), with ``client_certs`` (a listener asking for client certificates,
    whose filter strips clients' copies) the client certificate's, the bearer token and the
    caller's language."""
    if configured is None:
        configured = [*BASE_FORWARD_HEADERS, *(auth.headers.names() if auth is not None else ())]
        if client_certs:
            configured += CLIENT_CERT_HEADERS
    return frozenset(name.lower().encode() for name in configured)


def asks_client_certs(config: GatewayConfig) -> bool:
    """Whether ``config``'s listener asks for client certificates (mutual TLS)."""
    return config.listen.tls is not None and config.listen.tls.client_certificates is not None


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]) -> bytes:
    """The client's headers named in ``names`` (lower-case), as header lines."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers if name.lower() in names)


def upstream_problem(status: int, reason: str, body: Any, members: Mapping[str, Any]) -> Rejection:
    """The problem an endpoint answers when a call it needed failed with ``status``.

    A service's 4xx is passed through with the members of its JSON error body (its ``title``
    and ``detail`` included: "order 7 not found" is what the client needs to see); a service's
    5xx becomes 502; the gateway's own statuses (504 timeout, 503 no instance) stay.
    ``members`` are the gateway's (``call``, ``service``, ``code``): they win a name the
    service's body also uses. The body's members are data, never keyword arguments: whatever
    names a service sends (``headers``, ``call``, ``status``) cannot break the answer.
    """
    if 400 <= status < 500 and isinstance(body, dict):
        found = dict(body)
        title = found.pop("title", None)
        detail = found.pop("detail", None)
        if detail is not None and not isinstance(detail, str):
            found["errors"] = detail  # e.g. FastAPI's list of validation errors
        for key in ("status", "request_id"):
            found.pop(key, None)
        found.update(members)
        return Rejection(
            status,
            title if isinstance(title, str) else reason_phrase(status).decode(),
            detail if isinstance(detail, str) else reason,
            members=found,
        )
    return Rejection(status, reason_phrase(status).decode(), reason, members=members)
