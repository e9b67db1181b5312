"""The proxy action: forward one exchange to an instance of a cluster and stream the answer back.

Hop-by-hop headers (RFC 9110 §7.6.1, plus those named in Connection) never cross; the gateway
adds X-Forwarded-For/Proto/Host, Via, X-Request-ID and a child traceparent upstream, and returns
X-Request-ID and traceparent to the client. Bodies are streamed both ways with flow control.
Every request also carries its remaining time budget in ``X-Edgeway-Deadline-Ms`` (see
:mod:`edgeway.resilience.deadline`).

A service that configures resilience has a guard (:mod:`edgeway.gateway.upstream.resilient`); the proxy
calls it at four points: admission (shedding, the service breaker), the choice of instance, the
decision to retry an attempt, and each attempt's outcome. The logic lives in
:mod:`edgeway.resilience`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Action, GatewayEnv, RequestContext
from edgeway.gateway.core.router import rewrite_path
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS, OWN_LINES, Forwarding
from edgeway.gateway.upstream.resilient import ServiceCall, begin_call, service_guard, wait_call
from edgeway.http.errors import (
    HttpError,
    UpstreamError,
    UpstreamReset,
    UpstreamTimeout,
)
from edgeway.http.exchange import Exchange, Headers
from edgeway.http.headers import HOP_BY_HOP, connection_tokens
from edgeway.http.limits import UpstreamTimeouts
from edgeway.http.upstream import ResponseHead, UpstreamConnection
from edgeway.resilience.balancer import NoInstanceAvailable
from edgeway.resilience.deadline import DEADLINE_HEADER, incoming_budget
from edgeway.resilience.guard import ServiceGuard
from edgeway.resilience.retry import IDEMPOTENT_METHODS

# Request headers the gateway rewrites itself (besides hop-by-hop and forwarding ones).
_REPLACED: Final = frozenset(
    {
        b"host",
        b"via",
        b"x-request-id",
        b"traceparent",
        b"expect",
        b"content-length",
        DEADLINE_HEADER,
    }
)
_SKIP_REQUEST: Final = HOP_BY_HOP | _REPLACED | FORWARDING_HEADERS
_SKIP_RESPONSE: Final = HOP_BY_HOP | {b"content-length", b"x-request-id", b"traceparent"}
_VIA: Final = b"1.1 edgeway"
_OWN_FORWARDING: Final = OWN_LINES
# The one protocol a proxy route tunnels (``websocket: true``); any other Upgrade is stripped.
_WEBSOCKET: Final = b"websocket"
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Header changes a route applies, names lower-cased once at load time."""

    set: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()

    @classmethod
    def from_config(cls, set_: dict[str, str], remove: list[str]) -> HeaderEdits:
        sets = tuple((k.lower().encode(), v.encode()) for k, v in set_.items())
        # A header that is set is replaced, so its incoming copies are removed too.
        return cls(sets, frozenset(r.lower().encode() for r in remove) | {k for k, _ in sets})


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    cluster: Cluster
    guard: ServiceGuard[Endpoint] | None  # None: the service configures no resilience
    request_headers: HeaderEdits
    response_headers: HeaderEdits
    websocket: bool
    websocket_idle_timeout: float
    forwarding: Forwarding
    request_buffer: int = 0  # a body up to this size is read whole before a connection is taken


def proxy_target(route: Route, env: GatewayEnv) -> ProxyTarget:
    """What a proxy route forwards to, compiled from its config."""
    action = route.proxy
    assert action is not None  # called for proxy routes only
    return ProxyTarget(
        cluster=env.clusters[action.service],
        guard=service_guard(env, action.service),
        request_headers=HeaderEdits.from_config(action.request_headers.set, action.request_headers.remove),
        response_headers=HeaderEdits.from_config(action.response_headers.set, action.response_headers.remove),
        websocket=action.websocket,
        websocket_idle_timeout=float(action.websocket_idle_timeout),
        request_buffer=int(env.config.limits.request_buffer_bytes),
        forwarding=env.forwarding,
    )


def build_proxy(route: Route, env: GatewayEnv) -> Action:
    """The proxy action of a route: rewrite the path, forward to an instance of the service."""
    target = proxy_target(route, env)

    async def proxy(ctx: RequestContext) -> None:
        ex = ctx.ex
        upstream_path = rewrite_path(ctx.match).encode()
        if ex.query:
            upstream_path += b"?" + ex.query
        await forward(ex, target, upstream_path, ctx.traceparent)

    return proxy


def request_head(
    ex: Exchange, target: ProxyTarget, path_and_query: bytes, ep: Endpoint, upstream_tp: bytes, budget: float
) -> bytes:
    sent: Headers | None = None  # the client's forwarding headers: forwarding.py decides
    via = b""
    named: set[bytes] | None = None
    remove = target.request_headers.remove
    kept: Headers = []
    for name, value in ex.headers:
        lname = name.lower()
        if lname in _SKIP_REQUEST:
            if lname in FORWARDING_HEADERS:
                if sent is None:
                    sent = []
                sent.append((lname, value))
            elif lname == b"via":
                via = value + b", "
            elif lname == b"connection":
                named = (named or set()) | connection_tokens(value)
        elif lname not in remove and not (b"_" in lname and _alias_of_skipped(lname, remove)):
            kept.append((name, value))
    if named:
        # Connection may name headers that came before it, so this filter runs after the loop.
        kept = [(n, v) for n, v in kept if n.lower() not in named]
    parts = [ex.method, b" ", path_and_query, b" HTTP/1.1\r\nhost: ", ep.authority, b"\r\n"]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    if sent is None:
        # forwarding.own_lines, inlined: the common case, and a call into an interpreted module
        # costs more than the formatting.
        parts.append(_OWN_FORWARDING % (ex.client.encode(), ex.scheme, ex.host))
    else:
        parts.append(target.forwarding.lines(ex, sent))
    parts += (
        b"via: ",
        via,
        _VIA,
        b"\r\nx-request-id: ",
        ex.request_id,
        b"\r\ntraceparent: ",
        upstream_tp,
        b"\r\nx-edgeway-deadline-ms: %d\r\n" % max(1, int(budget * 1000)),
    )
    for name, value in target.request_headers.set:
        parts += (name, b": ", value, b"\r\n")
    if ex.content_length is not None:
        parts.append(b"content-length: %d\r\n" % ex.content_length)
    elif ex.chunked_request:
        parts.append(b"transfer-encoding: chunked\r\n")
    if target.websocket and ex.upgrade == _WEBSOCKET:
        parts.append(b"connection: upgrade\r\nupgrade: websocket\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _alias_of_skipped(lname: bytes, remove: frozenset[bytes]) -> bool:
    """``Content_Length``, ``X_Forwarded_For``...: a name that is a header the gateway writes or
    removes with ``_`` for ``-``. CGI, WSGI and several servers map both spellings to the same
    variable, so the service would take the client's copy for the gateway's: never forwarded."""
    alias = lname.replace(b"_", b"-")
    return alias in _SKIP_REQUEST or alias in remove


def response_headers(ex: Exchange, resp: ResponseHead, target: ProxyTarget, client_tp: bytes) -> Headers:
    named: set[bytes] | None = None
    remove = target.response_headers.remove
    out: Headers = []
    for name, value in resp.headers:
        lname = name.lower()
        if lname in _SKIP_RESPONSE:
            if lname == b"connection":
                named = (named or set()) | connection_tokens(value)
            continue
        if lname in remove:
            continue
        out.append((name, value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    out.extend(target.response_headers.set)
    out.append((b"x-request-id", ex.request_id))
    out.append((b"traceparent", client_tp))
    return out


def forward(
    ex: Exchange, target: ProxyTarget, path_and_query: bytes, upstream_tp: bytes
) -> Awaitable[float | None]:
    """The coroutine that forwards ``ex``; await it.

    A plain function returning the coroutine, so a service without resilience costs one
    coroutine per request (its single attempt), not two.
    """
    body = ex.body
    if not body.complete and body.buffered < target.request_buffer:
        # A slow client must not hold an upstream connection while its body trickles in: read it
        # (up to the buffer) first. The service's timeouts start once it has arrived.
        return _buffer_then_forward(ex, target, path_and_query, upstream_tp)
    cluster = target.cluster
    # The request's time budget: the service's total timeout, or less if the caller said so.
    budget = cluster.timeouts.total
    incoming = incoming_budget(ex.headers)
    if incoming is not None and incoming < budget:
        if incoming <= 0:
            raise Rejection(504, "Gateway Timeout", "the request's deadline had passed on arrival")
        budget = incoming
    deadline = asyncio.get_running_loop().time() + budget
    # A WebSocket handshake is checked before any instance is chosen; the 101 must answer it.
    accept = websocket_accept(ex) if target.websocket and ex.upgrade == _WEBSOCKET else b""
    guard = target.guard
    if guard is not None:
        return _forward_guarded(ex, target, path_and_query, upstream_tp, deadline, guard, accept)
    try:
        ep = cluster.pick()
    except NoInstanceAvailable:
        raise Rejection(
            503, "Service Unavailable", f"no available instance of service {cluster.name!r}"
        ) from None
    return attempt(ex, target, path_and_query, upstream_tp, ep, deadline, None, accept)


def websocket_accept(ex: Exchange) -> bytes:
    """The Sec-WebSocket-Accept that answers the client's handshake; 400 when its key is not
    exactly one base64 value of 16 bytes (RFC 6455 §4.1)."""
    keys = [v for n, v in ex.headers if n.lower() == b"sec-websocket-key"]
    key = keys[0].strip() if len(keys) == 1 else b""
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        raise Rejection(400, "Bad Request", "a WebSocket upgrade needs one valid Sec-WebSocket-Key")
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


async def _buffer_then_forward(
    ex: Exchange, target: ProxyTarget, path_and_query: bytes, upstream_tp: bytes
) -> float | None:
    await ex.body.fill(target.request_buffer)
    return await forward(ex, target, path_and_query, upstream_tp)


async def _forward_guarded(
    ex: Exchange,
    target: ProxyTarget,
    path_and_query: bytes,
    upstream_tp: bytes,
    deadline: float,
    guard: ServiceGuard[Endpoint],
    accept: bytes,
) -> None:
    """The resilience hooks: admission (shedding, service breaker), instance choice, retries."""
    call = begin_call(target.cluster, guard, ex) or await wait_call(target.cluster, guard, ex)
    failure: BaseException | None = None
    try:
        while (
            delay := await attempt(
                ex, target, path_and_query, upstream_tp, call.pick(), deadline, call, accept
            )
        ) is not None:
            await asyncio.sleep(delay)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if len(call.tried) > 1:
            ex.log["attempts"] = len(call.tried)
        call.finish(ex.status, failure)


async def attempt(
    ex: Exchange,
    target: ProxyTarget,
    path_and_query: bytes,
    upstream_tp: bytes,
    ep: Endpoint,
    deadline: float,
    call: ServiceCall | None,
    accept: bytes = b"",
) -> float | None:
    """One attempt on ``ep``; the backoff before a retry when ``call`` allows one, else None.

    ``accept``: the Sec-WebSocket-Accept of the upgrade this request forwards (b"": none)."""
    cluster = target.cluster
    ex.log["upstream"] = ep.label
    loop = asyncio.get_running_loop()
    head = request_head(ex, target, path_and_query, ep, upstream_tp, deadline - loop.time())
    timeouts = cluster.timeouts
    ep.outstanding += 1
    outcome: int | BaseException = 0
    # Timeouts are deadlines on the connection, fired by the pool's ticker (see DeadlineWatch):
    # timer handles and asyncio.timeout scopes cost more than the rest of the bookkeeping.
    try:
        try:
            conn, resp, sender = await _send(ex, ep, head, timeouts, deadline, accept)
        except UpstreamError as exc:
            outcome = exc
            if (
                call is not None
                and (delay := call.retry_after_error(exc, deadline - loop.time())) is not None
            ):
                return delay
            raise
        outcome = resp.status
        if (
            call is not None
            and (delay := call.retry_after_status(resp.status, deadline - loop.time())) is not None
        ):
            # Nothing reached the client yet: drop this answer (and its connection) and go elsewhere.
            conn.clear_deadline()
            _cancel(sender)
            ep.pool.release(conn)
            return delay
        if resp.upgraded:
            # The connection accepted this 101 as the answer to our handshake (expect_upgrade).
            # A WebSocket lives outside the exchange's total timeout, and outside the pool: its
            # slot is free for other requests at once, whatever the session's length.
            conn.clear_deadline()
            ep.pool.detach(conn)
            try:
                await _tunnel(ex, target, conn, response_headers(ex, resp, target, upstream_tp))
            finally:
                conn.close()
            return None
        if conn.response_complete:
            conn.clear_deadline()
        else:
            conn.set_deadline(deadline, "total", timeouts.total)
        try:
            await respond_upstream(ex, target, conn, resp, upstream_tp)
            if sender is not None:
                # The upstream answered early; a body it no longer reads must not hang us, and
                # the connection is not reusable unless the body went out whole.
                if conn.response_complete and not sender.done():
                    sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, HttpError):
                    await sender
        except UpstreamTimeout as exc:
            outcome = exc
            ex.abort()  # the response has started: cut it rather than send a short body
        finally:
            _cancel(sender)  # still running when the response failed, or the client went away
            conn.clear_deadline()
            ep.pool.release(conn)
        return None
    except BaseException as exc:
        if isinstance(outcome, int):
            outcome = exc
        raise
    finally:
        ep.outstanding -= 1
        if call is not None:
            call.report(outcome)


async def _send(
    ex: Exchange, ep: Endpoint, head: bytes, timeouts: UpstreamTimeouts, deadline: float, accept: bytes
) -> tuple[UpstreamConnection, ResponseHead, asyncio.Task[None] | None]:
    """Send the request and wait for the response head; the connection is the caller's after.

    A request body is sent by its own task, concurrently with waiting for the response: an
    upstream may answer (and stream its answer) before it has read the whole body, and waiting
    for the body first would deadlock once both directions' buffers fill up. The task is
    returned still running when the head came first; the caller awaits it after the response.
    """
    has_body = not ex.body.complete or ex.body.received > 0
    retryable = not has_body and ex.method in IDEMPOTENT_METHODS
    fresh = False
    while True:
        conn, reused = await ep.pool.acquire(timeouts.connect, fresh=fresh)
        conn.begin(head_request=ex.method == b"HEAD")
        if accept:
            conn.expect_upgrade(_WEBSOCKET, accept)
        sender: asyncio.Task[None] | None = None
        conn.set_deadline(deadline, "total", timeouts.total)
        try:
            conn.write(head)
            if has_body:
                sender = asyncio.get_running_loop().create_task(_send_body(ex, conn))
                head_waiter = conn.head_waiter()
                await asyncio.wait((sender, head_waiter), return_when=asyncio.FIRST_COMPLETED)
                if sender.done():
                    sender.result()  # the body failed: raise its error
                    sender = None
                elif head_waiter.done():
                    return conn, head_waiter.result(), sender
            else:
                conn.request_sent = True
            waiter = conn.head_waiter()
            if waiter.done():
                return conn, waiter.result(), sender
            first_byte = asyncio.get_running_loop().time() + timeouts.first_byte
            if first_byte < deadline:
                conn.set_deadline(first_byte, "first_byte", timeouts.first_byte)
            return conn, await waiter, sender
        except UpstreamReset:
            conn.clear_deadline()
            _cancel(sender)
            ep.pool.release(conn)
            # A pooled connection the upstream closed while idle: the request never reached the
            # application, so one retry on a fresh connection is safe for idempotent methods.
            if reused and retryable and not conn.got_bytes and not fresh:
                fresh = True
                continue
            raise
        except BaseException:
            conn.clear_deadline()
            _cancel(sender)
            ep.pool.release(conn)
            raise


def _cancel(task: asyncio.Task[None] | None) -> None:
    """Stop the body sender, and take its outcome: its error (the client went away, the body
    timed out) is the exchange's, already answered, and unretrieved it is logged as "Task
    exception was never retrieved" when the task is collected."""
    if task is None:
        return
    if task.done():
        _retrieve(task)
    else:
        task.cancel()
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _send_body(ex: Exchange, conn: UpstreamConnection) -> None:
    chunked = ex.content_length is None
    async for chunk in ex.body:
        conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
    conn.request_sent = True


async def respond_upstream(
    ex: Exchange, target: ProxyTarget, conn: UpstreamConnection, resp: ResponseHead, tp: bytes
) -> None:
    headers = response_headers(ex, resp, target, tp)
    status = resp.status
    if ex.method == b"HEAD":
        ex.start(status, headers, resp.content_length)
        ex.finish()
        return
    body = conn.body
    if body.complete:
        ex.respond(status, headers, body.read_nowait())
        return
    ex.start(status, headers, resp.content_length, first=body.read_nowait())
    while chunk := await body.read():
        ex.write(chunk)
        await ex.drain()
    ex.finish()


async def _tunnel(ex: Exchange, target: ProxyTarget, conn: UpstreamConnection, headers: Headers) -> None:
    headers = [*headers, (b"connection", b"upgrade"), (b"upgrade", _WEBSOCKET)]
    tunnel = ex.switch_to_tunnel(headers, conn, target.websocket_idle_timeout)
    await tunnel.closed
    ex.log["tunnel_bytes_up"] = tunnel.bytes_up
    ex.log["tunnel_bytes_down"] = tunnel.bytes_down
