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

from edgeway.gateway.actions.tunnel_credentials import COMPONENT as TUNNELS
from edgeway.gateway.actions.tunnel_credentials import TunnelCredentials
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.identity import Identity
from edgeway.gateway.core.pipeline import GatewayEnv, Held
from edgeway.gateway.core.router import rewrite_path
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.telemetry.meters import RequestTracing, ServiceMeter
from edgeway.gateway.upstream.call import CallLimits, UpstreamCall
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS, Forwarding
from edgeway.gateway.upstream.resilient import service_guard
from edgeway.http.errors import (
    HttpError,
    UpstreamError,
    UpstreamReset,
    UpstreamTimeout,
)
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.headers import HOP_BY_HOP, connection_tokens
from edgeway.http.upstream import ResponseHead, UpstreamConnection
from edgeway.resilience.deadline import DEADLINE_HEADER, incoming_budget
from edgeway.resilience.guard import ServiceGuard

# Marks the copy of a request that a mirror sends (edgeway.gateway.traffic.mirror); a client's
# own is never forwarded, so a service can trust it (e.g. to skip side effects for a copy).
MIRROR_HEADER: Final = b"x-edgeway-mirror"
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
        MIRROR_HEADER,
    }
)
# Never copied from the client's request: written by the gateway, or not to be forwarded (the
# mirror's copy follows the same rule).
NOT_FORWARDED: Final = HOP_BY_HOP | _REPLACED | FORWARDING_HEADERS
_SKIP_RESPONSE: Final = HOP_BY_HOP | {b"content-length", b"x-request-id", b"traceparent"}
# A byte value: ``in`` with it is a memchr; with a bytes needle, bytes.__contains__ tries it as
# an int first and raises inside (~2,200 instructions per forwarded header).
_UNDERSCORE: Final = 0x5F  # "_"
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
    limits: CallLimits  # the service's timeouts, as every attempt of a call uses them
    request_buffer: int = 0  # a body up to this size is read whole before a connection is taken
    meter: ServiceMeter | None = None  # the service's metrics (None: metrics off)
    tracer: RequestTracing | None = None  # None: tracing off
    # websocket routes: closes a tunnel when the token that opened it is revoked or expires
    credentials: TunnelCredentials | None = None


def proxy_target(route: Route, env: GatewayEnv, service: str | None = None) -> ProxyTarget:
    """What a proxy route forwards to, compiled from its config; ``service``: one of the
    services a traffic-shifting route sends to (:mod:`edgeway.gateway.traffic`), instead of
    the route's one ``service``."""
    action = route.proxy
    assert action is not None  # called for proxy routes only
    name = service if service is not None else action.service
    assert name is not None  # a route without a `service` has a split, which names them
    cluster = env.clusters[name]
    timeouts = cluster.timeouts
    telemetry = telemetry_of(env)
    return ProxyTarget(
        cluster=cluster,
        limits=CallLimits(timeouts.total, timeouts.first_byte, timeouts.connect, 0),
        guard=service_guard(env, name),
        request_headers=HeaderEdits.from_config(action.request_headers.set, action.request_headers.remove),
        response_headers=HeaderEdits.from_config(action.response_headers.set, action.response_headers.remove),
        websocket=action.websocket,
        websocket_idle_timeout=float(action.websocket_idle_timeout),
        request_buffer=int(env.config.limits.request_buffer_bytes),
        forwarding=env.forwarding,
        meter=telemetry.service(name),
        tracer=telemetry.tracer,
        credentials=env.shared(TUNNELS, lambda: TunnelCredentials(env)) if action.websocket else None,
    )


def build_proxy(route: Route, env: GatewayEnv) -> ProxyAction:
    """The proxy action of a route: rewrite the path, forward to an instance of the service."""
    return ProxyAction(proxy_target(route, env))


class ProxyAction:
    """A route's proxy action, in both modes: awaited in a task (``__call__``), or started from
    the engine's callback (``start``, the :class:`~edgeway.gateway.core.pipeline.CallbackAction`
    form) when the request's filters all admitted at once."""

    __slots__ = ("fast", "target")

    def __init__(self, target: ProxyTarget) -> None:
        self.target = target
        # A service with a resilience policy is always proxied in a task: admission, retries
        # and backoff await.
        self.fast = target.guard is None

    def __call__(self, ctx: RequestContext) -> Awaitable[None]:
        return forward(ctx, self.target, upstream_path(ctx))

    def start(self, ctx: RequestContext, held: Held) -> Awaitable[None] | None:
        """Write the request on an idle pooled connection and follow the answer from callbacks
        (None), or the awaitable that proxies it in a task: a request with a body, HEAD, an
        upgrade or a caller's deadline; no idle connection to the chosen instance (the attempt
        connects in a task, on that instance: the balancer's choice stands)."""
        ex = ctx.ex
        target = self.target
        path = upstream_path(ctx)
        if (
            not self.fast
            or ex.method == b"HEAD"
            or ex.upgrade is not None
            or not ex.body.complete
            or ex.body.received
            or incoming_budget(ex.headers) is not None
        ):
            return forward(ctx, target, path)
        now = ex.loop_time()
        call = ProxyCall(ctx, target, path, now, now + target.limits.total)
        ep = call.pick()  # NoInstance: answered 503 by the runtime, at once
        conn = ep.pool.take_idle()
        transport = conn.transport if conn is not None else None
        if conn is not None and (transport is None or transport.is_closing()):
            ep.pool.release(conn)  # not reusable: closed and counted out
            conn = None
        if conn is None:
            return call.run(ep)  # connecting (or waiting for a free connection) awaits
        call.held = held
        call.ep = ep
        ep.outstanding += 1
        call.request = call.render(ep)
        call.send(conn, reused=True)
        if call.error is not None:
            # The pooled connection was closed as we wrote on it (the service closed it while
            # idle): nothing will call back, so the attempt goes on in a task, which retries
            # it on a fresh connection.
            conn.listener = None
            call.held = None
            return call.run_attempt()
        ex.watch_client(call.client_lost)
        return None


def upstream_path(ctx: RequestContext) -> bytes:
    path = rewrite_path(ctx.match).encode()
    query = ctx.ex.query
    return path + b"?" + query if query else path


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
        if lname in NOT_FORWARDED:
            if lname in FORWARDING_HEADERS:
                if sent is None:
                    sent = []
                sent.append((lname, value))
            elif lname == b"via":
                via = value + b", "
            elif lname == b"connection":
                named = (named or set()) | connection_tokens(value)
        elif lname not in remove and not (_UNDERSCORE in lname and underscore_alias(lname, remove)):
            kept.append((name, value))
    if named:
        # Connection may name headers that came before it, so this filter runs after the loop.
        kept = [(n, v) for n, v in kept if n.lower() not in named]
    # Each line is one literal bytes format: compiled, a length pass and one copy (mypyc's bytes
    # build), where four pieces per line cost a tuple, an in-place concat and the buffer
    # protocol per piece in the join.
    parts = [b"%b %b HTTP/1.1\r\nhost: %b\r\n" % (ex.method, path_and_query, ep.authority)]
    for name, value in kept:
        parts.append(b"%b: %b\r\n" % (name, value))
    if sent is None:
        # forwarding.own_lines (the same text as OWN_LINES), inlined: the common case. A call into
        # an interpreted module costs more than the formatting, and ``%`` on a named constant is
        # a generic Python format (~1,000 instructions) where mypyc builds a literal's.
        parts.append(
            b"x-forwarded-for: %b\r\nx-forwarded-proto: %b\r\nx-forwarded-host: %b\r\n"
            % (ex.client.encode(), ex.scheme, ex.host)
        )
    else:
        parts.append(target.forwarding.lines(ex, sent))
    parts.append(
        b"via: %b1.1 edgeway\r\nx-request-id: %b\r\ntraceparent: %b\r\nx-edgeway-deadline-ms: %d\r\n"
        % (via, ex.request_id, upstream_tp, max(1, int(budget * 1000)))
    )
    for name, value in target.request_headers.set:
        parts.append(b"%b: %b\r\n" % (name, value))
    if ex.content_length is not None:
        parts.append(b"content-length: %d\r\n" % ex.content_length)
    elif ex.chunked_request:
        parts.append(b"transfer-encoding: chunked\r\n")
    if target.websocket and ex.upgrade == _WEBSOCKET:
        parts.append(b"connection: upgrade\r\nupgrade: websocket\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def underscore_alias(lname: bytes, remove: frozenset[bytes]) -> bool:
    """``Content_Length``, ``X_Forwarded_For``...: a name that is a header the gateway writes or
    removes with ``_`` for ``-``. CGI, WSGI and several servers map both spellings to the same
    variable, so the service would take the client's copy for the gateway's: never forwarded
    (by the proxy nor by a mirror's copy)."""
    alias = lname.replace(b"_", b"-")
    return alias in NOT_FORWARDED or alias in remove


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


def forward(ctx: RequestContext, target: ProxyTarget, path_and_query: bytes) -> Awaitable[None]:
    """The coroutine that proxies the request in a task; await it."""
    ex = ctx.ex
    body = ex.body
    if not body.complete and body.buffered < target.request_buffer and not body.starved:
        # A slow client must not hold an upstream connection while its body trickles in: read it
        # (up to the buffer) first. The service's timeouts start once it has arrived. (Not when
        # the body can get no more: its HTTP/2 connection's body budget is held by its streams.)
        return _buffer_then_forward(ctx, target, path_and_query)
    # The request's time budget: the service's total timeout, or less if the caller said so.
    budget = target.limits.total
    incoming = incoming_budget(ex.headers)
    if incoming is not None and incoming < budget:
        if incoming <= 0:
            raise Rejection(504, "Gateway Timeout", "the request's deadline had passed on arrival")
        budget = incoming
    now = ex.loop_time()
    call = ProxyCall(ctx, target, path_and_query, now, now + budget)
    # A WebSocket handshake is checked before any instance is chosen; the 101 must answer it.
    if target.websocket and ex.upgrade == _WEBSOCKET:
        call.accept = websocket_accept(ex)
    return call.run(None)


def websocket_accept(ex: Exchange) -> bytes:
    """The Sec-WebSocket-Accept that answers the client's handshake; 400 when its key is not
    exactly one base64 value of 16 bytes, or when it is not a GET without a body (RFC 6455 §4.1)."""
    if ex.method != b"GET" or ex.chunked_request or ex.content_length:
        # A body would be held back as the tunnel's first bytes while the service, told of it by
        # the forwarded Content-Length or Transfer-Encoding, waits for it (to the first-byte
        # timeout), or answers 101 and reads the body as WebSocket traffic.
        raise Rejection(400, "Bad Request", "a WebSocket upgrade is a GET request without a body")
    keys = [v for n, v in ex.headers if n.lower() == b"sec-websocket-key"]
    key = keys[0].strip() if len(keys) == 1 else b""
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        raise Rejection(400, "Bad Request", "a WebSocket upgrade needs one valid Sec-WebSocket-Key")
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


async def _buffer_then_forward(ctx: RequestContext, target: ProxyTarget, path_and_query: bytes) -> None:
    await ctx.ex.body.fill(target.request_buffer)
    await forward(ctx, target, path_and_query)


class ProxyCall(UpstreamCall):
    """One proxied request's exchange with its service (:class:`UpstreamCall`: admission,
    instance, attempts, retries, deadlines), rendered from the client's request and answered
    to the client: streamed in a task (:meth:`run`), or followed from the connection's
    callbacks (the ``UpstreamListener`` methods) while ``held``."""

    __slots__ = ("accept", "ctx", "held", "path", "sender", "target")

    def __init__(
        self, ctx: RequestContext, target: ProxyTarget, path: bytes, now: float, deadline: float
    ) -> None:
        ex = ctx.ex
        super().__init__(
            target.cluster, target.guard, ex.method, target.limits, ex.event_loop(), now, end=deadline
        )
        self.ctx = ctx
        self.target = target
        self.path = path
        self.streamed_body = not ex.body.complete or ex.body.received > 0
        self.accept = b""  # the Sec-WebSocket-Accept of the upgrade this request forwards
        self.sender: asyncio.Task[None] | None = None  # streams the client's body upstream
        self.held: Held | None = None  # set while the request is followed from callbacks
        self.meter = target.meter
        if target.tracer is not None:
            self.trace = target.tracer.call(ctx.span, target.cluster.name)

    # -- the request ----------------------------------------------------------------------
    def render(self, ep: Endpoint) -> bytes:
        ex = self.ctx.ex
        ex.log["upstream"] = ep.label
        trace = self.trace
        tp = self.ctx.traceparent if trace is None else trace.attempt(self, ep)
        return request_head(ex, self.target, self.path, ep, tp, self.until - self.sent_at)

    def begin(self, conn: UpstreamConnection) -> None:
        conn.begin(head_request=self.head_request, listener=self if self.held is not None else None)
        if self.accept:
            conn.expect_upgrade(_WEBSOCKET, self.accept)

    def sent(self, conn: UpstreamConnection) -> None:
        if not self.streamed_body:
            conn.request_sent = True
            self.arm_first_byte(conn)
            return
        # The body goes up from its own task while the head is awaited: an upstream may answer
        # (and stream its answer) before it has read the whole body, and waiting for the body
        # first would deadlock once both directions' buffers fill up.
        conn.set_deadline(self.end, "total", self.limits.total)
        self.sender = self.loop.create_task(_send_body(self.ctx.ex, conn))

    def arm_first_byte(self, conn: UpstreamConnection) -> None:
        # From when the request is out (after connecting, after the body).
        start = self.sent_at if self.held is not None else self.loop.time()
        first_byte = start + self.limits.first_byte
        if first_byte < self.end:
            conn.set_deadline(first_byte, "first_byte", self.limits.first_byte)
        else:
            conn.set_deadline(self.end, "total", self.limits.total)

    async def wait_head(self, conn: UpstreamConnection) -> ResponseHead:
        waiter = conn.head_waiter()
        sender = self.sender
        if sender is not None:
            if not waiter.done() and not sender.done():
                await asyncio.wait((sender, waiter), return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                return waiter.result()  # the head came first; the body goes on
            self.sender = None
            sender.result()  # the body failed: raise its error
            if not waiter.done():
                self.arm_first_byte(conn)  # the body is out whole: the service's turn
        if waiter.done():
            return waiter.result()
        return await waiter

    def drop_connection(self) -> None:
        _cancel(self.sender)  # still running when the attempt failed, or the client went away
        self.sender = None
        super().drop_connection()

    # -- in a task ------------------------------------------------------------------------
    async def run(self, ep: Endpoint | None) -> None:
        """Proxy the request: admission, attempts, then the answer streamed to the client.
        ``ep``: the instance already chosen (the callback path chose it, then found no idle
        connection to it)."""
        if ep is None and not self.admit():
            await self.wait_admission()
        ex = self.ctx.ex
        outcome: int | BaseException = 0  # the last attempt's, for the guard
        failure: BaseException | None = None
        try:
            self.attempt(ep if ep is not None else self.pick())
            try:
                conn, resp = await self.response_head()
            except UpstreamError as exc:
                outcome = exc
                raise
            outcome = resp.status
            await self._answer(conn, resp)
        except UpstreamTimeout as exc:
            outcome = exc
            if ex.state is ResponseState.PENDING:
                failure = exc
                raise
            ex.abort()  # the response has started: cut it rather than send a short body
        except BaseException as exc:
            failure = exc
            if isinstance(outcome, int):
                outcome = exc
            raise
        finally:
            if self.count > 1:
                ex.log["attempts"] = self.count
            self.report(outcome)
            self.finish(ex.status if failure is None else failure)

    async def _answer(self, conn: UpstreamConnection, resp: ResponseHead) -> None:
        ex = self.ctx.ex
        target = self.target
        tp = self.ctx.traceparent
        if resp.upgraded:
            # The connection accepted this 101 as the answer to our handshake (expect_upgrade).
            # A WebSocket lives outside the exchange's total timeout, and outside the pool: its
            # slot is free for other requests at once, whatever the session's length.
            conn.clear_deadline()
            assert self.ep is not None
            self.ep.pool.detach(conn)
            self.conn = None
            meter = target.meter
            if meter is not None:
                meter.tunnels += 1
            try:
                await _tunnel(ex, target, conn, response_headers(ex, resp, target, tp), self.ctx.identity)
            finally:
                conn.close()
                if meter is not None:
                    meter.tunnels -= 1
            return
        if conn.response_complete:
            conn.clear_deadline()
        else:
            conn.set_deadline(self.end, "total", self.limits.total)
        await respond_upstream(ex, target, conn, resp, tp)
        sender = self.sender
        if sender is not None:
            # The upstream answered early; a body it no longer reads must not hang us, and
            # the connection is not reusable unless the body went out whole.
            if conn.response_complete and not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, HttpError):
                await sender

    # -- from callbacks (UpstreamListener), while held --------------------------------------
    def upstream_data(self, conn: UpstreamConnection) -> None:
        head = conn.head
        held = self.held
        if head is None or held is None:
            return  # a partial head (or a 1xx): wait for more
        conn.listener = None
        self.held = None
        ctx = self.ctx
        ex = ctx.ex
        # (A 101 never gets here: the connection refuses one that no upgrade asked for.)
        if not conn.response_complete:
            # The body is still coming: stream it from a task, with flow control.
            conn.set_deadline(self.end, "total", self.limits.total)
            held.in_task(ctx, self._stream(conn, head))
            return
        conn.clear_deadline()
        ex.respond(
            head.status, response_headers(ex, head, self.target, ctx.traceparent), conn.body.read_nowait()
        )
        self.finish(head.status)
        held.finish(ctx, None)

    def upstream_failed(self, exc: Exception) -> None:
        conn = self.conn
        held = self.held
        if held is None or conn is None:
            return
        conn.listener = None
        self.held = None
        if isinstance(exc, UpstreamReset) and self.stale_retry_allowed(conn):
            # A pooled connection the upstream closed while it was idle: the request never
            # reached the application. The attempt goes on in a task, on a connection the
            # pool gives (one retry more on a fresh one if that is stale too).
            self.drop_connection()
            self.error = None
            if self.meter is not None:
                self.meter.retried()
            self.task = self.loop.create_task(self._open_and_send(fresh=False))
            held.in_task(self.ctx, self.run_attempt())
            return
        self.finish(exc)
        held.finish(self.ctx, exc)

    def client_lost(self) -> None:
        """The client closed its connection while the upstream was still answering."""
        held = self.held
        if held is None or self.conn is None:
            return
        self.conn.listener = None
        self.held = None
        ex = self.ctx.ex
        ex.status = ex.status or 499
        self.finish(0)
        held.finish(self.ctx, None)

    async def run_attempt(self) -> None:
        """The rest of an attempt already started, in a task."""
        try:
            conn, resp = await self.response_head()
            await self._answer(conn, resp)
        finally:
            self.finish(self.ctx.ex.status)

    async def _stream(self, conn: UpstreamConnection, head: ResponseHead) -> None:
        try:
            await respond_upstream(self.ctx.ex, self.target, conn, head, self.ctx.traceparent)
        finally:
            self.finish(head.status)


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


async def _tunnel(
    ex: Exchange, target: ProxyTarget, conn: UpstreamConnection, headers: Headers, identity: Identity | None
) -> None:
    headers = [*headers, (b"connection", b"upgrade"), (b"upgrade", _WEBSOCKET)]
    tunnel = ex.switch_to_tunnel(headers, conn, target.websocket_idle_timeout)
    release = target.credentials.hold(identity, tunnel, ex) if target.credentials is not None else None
    try:
        await tunnel.closed
    finally:
        if release is not None:
            release()
    ex.log["tunnel_bytes_up"] = tunnel.bytes_up
    ex.log["tunnel_bytes_down"] = tunnel.bytes_down
