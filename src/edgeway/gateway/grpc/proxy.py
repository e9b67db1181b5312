"""The proxy action of a service reached over HTTP/2 (``protocol: h2``): gRPC through the gateway.

A request to such a service is a stream on the instance's one HTTP/2 connection
(:mod:`edgeway.http.h2_pool`). Both bodies stream with flow control (a unary call, a server
stream, a client stream, a bidirectional one are the same to the proxy), and what the service
sends after the body — gRPC's ``grpc-status`` and ``grpc-message`` — reaches the client as
trailers. A trailers-only answer (an error before any message) is passed on as one.

The call is an :class:`UpstreamCall` for everything that is not the wire: admission to a
guarded service (concurrency bound, breaker), the choice of instance (health checks,
ejections), each outcome reported to the guard, the service's metrics.

**Deadlines.** The call's budget is the service's ``total`` timeout, or the client's
``grpc-timeout`` (for gRPC) or ``X-Edgeway-Deadline-Ms`` when shorter; the instance is told
what is left when the stream opens, in both headers. A call still running at its deadline is
reset upstream and answered ``DEADLINE_EXCEEDED`` (a 504 for a client that is not gRPC).

**Errors** the gateway makes for a gRPC request (no instance, refused, timed out) are raised as
for any proxied request; the runtime's one error rule answers them as gRPC statuses
(:mod:`edgeway.gateway.grpc.status`).

**gRPC-Web** (``proxy.grpc_web``) is this same call: :mod:`edgeway.gateway.grpc.web` reads and
checks the browser's body before the stream opens, and the answer is written through its
:class:`~edgeway.gateway.grpc.web.WebResponse` instead of the exchange.

A stream the instance refused unprocessed (``REFUSED_STREAM``, above a ``GOAWAY``) goes once to
another connection when the request body was held whole, whatever the method: the instance
never saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Final

from edgeway.gateway.actions.proxy import (
    _SKIP_RESPONSE,
    _UNDERSCORE,
    NOT_FORWARDED,
    ProxyTarget,
    underscore_alias,
    upstream_path,
)
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.grpc.deadline import GRPC_TIMEOUT, GrpcTimeoutError, format_timeout, parse_timeout
from edgeway.gateway.grpc.status import GrpcStatus, http_status_of, is_grpc
from edgeway.gateway.grpc.web import WebResponse, web_request
from edgeway.gateway.upstream.call import UpstreamCall
from edgeway.gateway.upstream.clusters import Endpoint
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS
from edgeway.http.errors import HttpError, UpstreamConnectError, UpstreamError, UpstreamTimeout
from edgeway.http.exchange import Exchange, Headers
from edgeway.http.h2_upstream import H2Refused, H2Stream
from edgeway.http.headers import connection_tokens
from edgeway.resilience.deadline import DEADLINE_HEADER, incoming_budget

__all__ = ["H2ProxyAction"]

_VIA: Final = b"2 edgeway"
# Request headers that never go into an HTTP/2 request of ours: connection-specific ones
# (RFC 9113 §8.2.2), those the gateway writes itself, and the client's grpc-timeout (replaced
# by what is left of the budget).
_SKIP_H2_REQUEST: Final = NOT_FORWARDED | {GRPC_TIMEOUT}
_SKIP_H2_RESPONSE: Final = _SKIP_RESPONSE | {b":status"}


class H2ProxyAction:
    """A route's proxy action when its service speaks HTTP/2; always run in a task."""

    __slots__ = ("grpc_web", "target")

    def __init__(self, target: ProxyTarget, grpc_web: bool = False) -> None:
        assert target.cluster.http2  # built for protocol: h2 services only
        self.target = target
        self.grpc_web = grpc_web  # translate gRPC-Web (proxy.grpc_web): edgeway.gateway.grpc.web

    def __call__(self, ctx: RequestContext) -> Awaitable[None]:
        return forward_h2(ctx, self.target, upstream_path(ctx), self.grpc_web)


def call_budget(ex: Exchange, total: float, grpc: bool) -> float:
    """Seconds the call may take: the service's ``total``, or the client's deadline when shorter;
    a :class:`Rejection` for a deadline that is malformed or already past."""
    budget = total
    incoming = incoming_budget(ex.headers)
    if incoming is not None and incoming < budget:
        budget = incoming
    if grpc:
        value = ex.header(GRPC_TIMEOUT)
        if value is not None:
            try:
                timeout = parse_timeout(value)
            except GrpcTimeoutError as exc:
                raise Rejection(400, "Bad Request", str(exc)) from None
            budget = min(budget, timeout)
    if budget <= 0:
        raise Rejection(504, "Gateway Timeout", "the request's deadline had passed on arrival")
    return budget


async def forward_h2(ctx: RequestContext, target: ProxyTarget, path: bytes, grpc_web: bool = False) -> None:
    ex = ctx.ex
    grpc = is_grpc(ex.header(b"content-type"))
    budget = call_budget(ex, target.limits.total, grpc)
    loop = ex.event_loop()
    now = loop.time()  # (before a gRPC-Web body is read: reading it spends the call's budget)
    web = await web_request(ex) if grpc_web and grpc else None
    call = H2Call(ctx, target, path, grpc, now, now + budget, web)
    await call.run()


class H2Call(UpstreamCall):
    """One proxied request as a stream on an instance's HTTP/2 connection."""

    __slots__ = ("ctx", "grpc", "path", "stream", "target", "web")

    def __init__(
        self,
        ctx: RequestContext,
        target: ProxyTarget,
        path: bytes,
        grpc: bool,
        now: float,
        end: float,
        web: WebResponse | None = None,
    ) -> None:
        ex = ctx.ex
        super().__init__(
            target.cluster, target.guard, ex.method, target.limits, ex.event_loop(), now, end=end
        )
        self.ctx = ctx
        self.target = target
        self.path = path
        self.grpc = grpc
        self.web = web  # a gRPC-Web call: its answer is written through this
        self.stream: H2Stream | None = None
        self.meter = target.meter

    async def run(self) -> None:
        if not self.admit():
            await self.wait_admission()
        ex = self.ctx.ex
        outcome: int | BaseException = 0
        try:
            # A body that has fully arrived is held whole, so a refused stream can be sent again.
            body = ex.body.read_nowait() if ex.body.complete else None
            try:
                async with asyncio.timeout_at(self.end):
                    stream = await self._open(body)
                    head = await stream.response()
            except TimeoutError:
                raise UpstreamTimeout("total", self.limits.total, instance=self.instance) from None
            outcome = int(dict(head).get(b":status", b"502"))
            grpc_status = await self._answer(stream, head)
            if self.grpc and outcome == 200:
                # The call's outcome is its grpc-status, not the 200 every gRPC answer has: the
                # breakers, outlier ejection and metrics judge it as the HTTP status it means.
                ex.log["grpc_status"] = grpc_status.decode("latin-1") if grpc_status else ""
                outcome = http_status_of(grpc_status)
        except BaseException as exc:
            if isinstance(outcome, int) and outcome == 0:
                outcome = exc
            raise
        finally:
            open_stream = self.stream
            if open_stream is not None and not open_stream.ended:
                open_stream.reset()  # the client went away, or the deadline passed: the instance stops
            self.finish(outcome if isinstance(outcome, BaseException) or self.grpc else ex.status)

    async def _open(self, body: bytes | None) -> H2Stream:
        """The request's stream, its body sent (whole) or sending (streamed, in a task)."""
        while True:
            ep = self.pick()
            self.ep = ep
            ep.outstanding += 1
            self.sent_at = self.loop.time()
            pool = ep.h2
            assert pool is not None  # an http2 cluster's endpoints have one
            try:
                stream = await pool.open_stream(
                    self._headers(ep), self.limits.connect, end_stream=body == b""
                )
                self.stream = stream
                if body is None:
                    self.task = self.loop.create_task(self._send_body(stream))
                elif body:
                    await stream.send(body, end_stream=True)
                return stream
            except (H2Refused, UpstreamConnectError) as exc:
                # Never reached the service: another instance (or connection) may take it,
                # once, if the body can be sent again.
                self.report(exc)
                self.drop_attempt()
                self.stream = None
                if body is None or self.count > 1:
                    raise

    async def _send_body(self, stream: H2Stream) -> None:
        try:
            async for chunk in self.ctx.ex.body:
                await stream.send(chunk)
            await stream.send(b"", end_stream=True)
        except HttpError:
            # The client's body failed (it went away, too large): the instance must not wait
            # for the rest. An instance that reset the stream has said so to the reader.
            stream.reset()

    def _headers(self, ep: Endpoint) -> Headers:
        """The request's headers on the stream: pseudo-headers, the client's (lower-cased, less
        what never crosses), the gateway's own."""
        ctx = self.ctx
        ex = ctx.ex
        target = self.target
        ex.log["upstream"] = ep.label
        headers: Headers = [
            (b":method", ex.method),
            (b":scheme", b"https" if ep.tls is not None else b"http"),
            (b":authority", ep.authority),
            (b":path", self.path),
        ]
        remove = target.request_headers.remove
        named: set[bytes] = set()
        sent: Headers | None = None
        via = b""
        for name, value in ex.headers:
            lname = name.lower()
            if lname in _SKIP_H2_REQUEST:
                if lname in FORWARDING_HEADERS:
                    sent = [*(sent or ()), (lname, value)]
                elif lname == b"via":
                    via = value + b", "
                elif lname == b"connection":
                    named |= connection_tokens(value)
                continue
            if lname in remove or lname.startswith(b":"):
                continue
            # A name that is a skipped or removed one with `_` for `-` (many frameworks read them
            # as the same header) is dropped, as on the HTTP/1.1 proxy.
            if _UNDERSCORE in lname and underscore_alias(lname, remove):
                continue
            headers.append((lname, value))
        if named:
            headers = [(n, v) for n, v in headers if n not in named]
        # The forwarding headers by the gateway's trust rules (the same lines HTTP/1.1 gets).
        for line in target.forwarding.lines(ex, sent).split(b"\r\n"):
            name, _, value = line.partition(b": ")
            if name:
                headers.append((name, value))
        left = max(self.until - self.sent_at, 0.001)
        trace = self.trace
        tp = ctx.traceparent if trace is None else trace.attempt(self, ep)
        headers += [
            (b"via", via + _VIA),
            (b"x-request-id", ex.request_id),
            (b"traceparent", tp),
            (DEADLINE_HEADER, b"%d" % max(1, int(left * 1000))),
        ]
        if self.grpc:
            # gRPC servers want to know the client takes trailers; and the time left, as theirs.
            headers += [(b"te", b"trailers"), (GRPC_TIMEOUT, format_timeout(left))]
            if self.web is not None:
                self.web.to_upstream(headers)
        headers.extend(target.request_headers.set)
        return headers

    async def _answer(self, stream: H2Stream, head: Headers) -> bytes | None:
        """Stream the answer to the client; the gRPC status it ended with (None: none)."""
        ex: Exchange | WebResponse = self.ctx.ex if self.web is None else self.web
        status = 502
        headers: Headers = []
        remove = self.target.response_headers.remove
        for name, value in head:
            if name == b":status":
                status = int(value)
            elif name not in _SKIP_H2_RESPONSE and name not in remove:
                headers.append((name, value))
        headers.extend(self.target.response_headers.set)
        headers += [(b"x-request-id", ex.request_id), (b"traceparent", self.ctx.traceparent)]
        if stream.ended and not stream.has_data and stream.trailers is None:
            # Headers with END_STREAM: a trailers-only answer (gRPC's error before any message).
            ex.respond(status, headers)
            return self._grpc_status(stream, head)
        ex.start(status, headers)
        try:
            async with asyncio.timeout_at(self.end):
                while chunk := await stream.read():
                    ex.write(chunk)
                    if ex.write_paused():  # awaited only when needed: trailers then leave with the body
                        await ex.drain()
        except TimeoutError:
            stream.reset()
            if not self.grpc:
                raise UpstreamTimeout("total", self.limits.total, instance=self.instance) from None
            # The client gets the deadline as gRPC says: a status in the trailers.
            ex.finish(
                trailers=[
                    (b"grpc-status", b"%d" % GrpcStatus.DEADLINE_EXCEEDED),
                    (b"grpc-message", b"deadline exceeded in the gateway"),
                ]
            )
            return b"%d" % GrpcStatus.DEADLINE_EXCEEDED
        except UpstreamError:
            if not self.grpc:
                raise
            # The instance went away mid-stream: end the call with a status rather than a cut.
            ex.finish(
                trailers=[
                    (b"grpc-status", b"%d" % GrpcStatus.UNAVAILABLE),
                    (b"grpc-message", b"the service's stream was reset"),
                ]
            )
            return b"%d" % GrpcStatus.UNAVAILABLE
        sender = self.task
        if sender is not None and not sender.done():
            sender.cancel()  # answered in full: the rest of a body it never read goes nowhere
        if sender is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        self.task = None
        trailers = [(n, v) for n, v in stream.trailers or () if n not in remove]
        ex.finish(trailers=trailers or None)
        return self._grpc_status(stream, head)

    @staticmethod
    def _grpc_status(stream: H2Stream, head: Headers) -> bytes | None:
        fields: Headers = [*(stream.trailers or ()), *head]
        for name, value in fields:
            if name == b"grpc-status":
                return value
        return None
