"""One request/response cycle on a downstream connection.

The server protocol parses a request head into an :class:`Exchange` and hands it to the handler;
the handler answers through the exchange's response methods. Responses are written in request
order because the server runs one exchange per connection at a time (pipelined requests wait in
a queue), so an exchange may write straight to the transport.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from mypy_extensions import mypyc_attr

from edgeway.http.body import BodyStream
from edgeway.http.headers import status_line
from edgeway.http.tunnel import Tunnel

# Per request: a C static in a compiled build, not an attribute lookup on the module.
_perf_counter: Final = time.perf_counter

if TYPE_CHECKING:
    from edgeway.http.server import ServerProtocol
    from edgeway.http.server_tls import TlsInfo
    from edgeway.http.upstream import UpstreamConnection

Headers = list[tuple[bytes, bytes]]

_NO_BODY_STATUS: Final = frozenset({204, 304})


class ResponseState(enum.Enum):
    PENDING = "pending"  # nothing written yet: an error can still become a clean error response
    STREAMING = "streaming"  # head written, body in progress
    DONE = "done"  # the whole response is written

    @property
    def started(self) -> bool:
        return self is not ResponseState.PENDING


class ResponseTap(Protocol):
    """Sees a copy of the response a handler writes (the response cache stores it).

    ``head`` gets the handler's own headers, not ``extra_headers`` (those belong to this request:
    CORS, rate-limit state); ``body`` every body chunk, also for HEAD; ``end`` once the response
    is complete, ``abort`` when it was cut.
    """

    def head(self, status: int, headers: Headers, content_length: int | None) -> None: ...
    def body(self, chunk: bytes) -> None: ...
    def end(self) -> None: ...
    def abort(self) -> None: ...


# Compiled builds (mypyc) refuse Python subclasses of compiled classes unless allowed: an HTTP/2
# stream's exchange (edgeway.http.h2.exchange) is one, writing frames where this writes bytes.
@mypyc_attr(allow_interpreted_subclasses=True)
class Exchange:
    # One Exchange per request on the hot path: __slots__ saves ~40% of attribute memory and
    # makes attribute access a little faster than a dict.
    __slots__ = (
        "_chunked",
        "_protocol",
        "body",
        "bytes_out",
        "chunked_request",
        "client",
        "close_after",
        "content_length",
        "expect_continue",
        "extra_headers",
        "headers",
        "host",
        "http_version",
        "log",
        "method",
        "on_lost",
        "path",
        "query",
        "request_id",
        "scheme",
        "started",
        "state",
        "status",
        "tap",
        "target",
        "traceparent",
        "upgrade",
    )

    def __init__(
        self,
        protocol: ServerProtocol,
        method: bytes,
        target: bytes,
        path: bytes,
        query: bytes,
        http_version: bytes,
        headers: Headers,
        host: bytes,
        body: BodyStream,
        client: str,
    ) -> None:
        self._protocol = protocol
        # request
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.host = host
        self.body = body
        self.client = client
        self.scheme = b"http"
        self.content_length: int | None = None
        self.chunked_request = False
        self.expect_continue = False
        self.upgrade: bytes | None = None  # lower-cased Upgrade protocol when the client asked
        self.request_id = b""
        self.traceparent = b""
        # response
        self.state = ResponseState.PENDING
        self.status = 0
        self.bytes_out = 0
        self.close_after = False
        self._chunked = False
        # headers every response to this request carries, whoever writes it (CORS, RateLimit-*)
        self.extra_headers: Headers | None = None
        # a copy of the response for a filter that wants it (the cache); None costs one check
        self.tap: ResponseTap | None = None
        # observability: fields the access log and later stages add (route, upstream, ...)
        self.started = _perf_counter()
        self.log: dict[str, Any] = {}
        # a handler that holds the exchange (see server.Handler) wants to know when the client
        # goes away: see watch_client
        self.on_lost: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Exchange {self.method.decode()} {self.target.decode(errors='replace')} {self.state.value}>"

    # -- request helpers ----------------------------------------------------------------
    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header by lower-case name."""
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None

    def tls(self) -> TlsInfo | None:
        """What the connection's TLS handshake negotiated (its client certificate, ALPN); None
        on a plaintext listener. Read from the connection: nothing is copied per request."""
        return self._protocol.tls

    @property
    def keep_alive(self) -> bool:
        return not self.close_after

    # -- response ------------------------------------------------------------------------
    def add_response_header(self, name: bytes, value: bytes) -> None:
        """A header for whatever response this request gets (before it starts)."""
        if self.extra_headers is None:
            self.extra_headers = []
        self.extra_headers.append((name, value))

    def _head(self, status: int, headers: Headers, content_length: int | None, has_body: bool) -> bytes:
        parts = [status_line(status)]
        # A header line is one literal bytes format: compiled, one copy into a new bytes, where
        # four pieces cost a tuple, an in-place concat and the buffer protocol each in the join.
        for name, value in headers:
            parts.append(b"%b: %b\r\n" % (name, value))
        if self.extra_headers:
            for name, value in self.extra_headers:
                parts.append(b"%b: %b\r\n" % (name, value))
        if has_body:
            if content_length is not None:
                parts.append(b"content-length: %d\r\n" % content_length)
            elif self.http_version == b"1.0":
                # HTTP/1.0 has no chunked coding (RFC 9112 §6.1: not sent to a 1.0 client): the
                # body of unknown length ends where the connection does.
                self.close_after = True
            else:
                self._chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
        elif status not in _NO_BODY_STATUS and status >= 200 and content_length is not None:
            # HEAD: announce the length the GET would have had
            parts.append(b"content-length: %d\r\n" % content_length)
        if self.close_after or self._protocol.closing:
            self.close_after = True
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _body_allowed(self, status: int) -> bool:
        return self.method != b"HEAD" and status not in _NO_BODY_STATUS and status >= 200

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """Write a whole response in one transport write (the fast path)."""
        if self.tap is not None:
            self.tap.head(status, headers, len(body))
            self.tap.body(body)
            self.tap.end()
        allowed = self._body_allowed(status)
        head = self._head(status, headers, len(body), allowed)
        self.status = status
        self.state = ResponseState.DONE
        data = head + body if allowed and body else head
        self.bytes_out += len(data)
        self._protocol.write(data)

    def respond_json(self, status: int, payload: Any, headers: Headers | None = None) -> None:
        hs = [(b"content-type", b"application/json")]
        if headers:
            hs.extend(headers)
        self.respond(status, hs, orjson.dumps(payload))

    def respond_problem(
        self,
        status: int,
        title: str,
        detail: str = "",
        headers: Headers | None = None,
        members: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """An RFC 9457 problem+json response. ``members``: extra members as data (names the
        caller does not choose, e.g. a service's error body); they may set ``type`` but never
        the status, title, detail or request id this response states."""
        problem: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
        if members:
            problem.update(members)
            problem["title"] = title
            problem["status"] = status
            problem.pop("detail", None)
            problem.pop("request_id", None)
        if detail:
            problem["detail"] = detail
        if self.request_id:
            problem["request_id"] = self.request_id.decode()
        problem.update(extra)
        self.respond(
            status,
            [(b"content-type", b"application/problem+json"), *(headers or ())],
            orjson.dumps(problem),
        )

    def start(
        self, status: int, headers: Headers, content_length: int | None = None, first: bytes = b""
    ) -> None:
        """Write the response head (and optionally the first body bytes); stream the rest."""
        if self.tap is not None:
            self.tap.head(status, headers, content_length)
            self.tap.body(first)
        allowed = self._body_allowed(status)
        head = self._head(status, headers, content_length, allowed)
        self.status = status
        self.state = ResponseState.STREAMING
        self.bytes_out += len(head)
        if first and allowed:
            self._protocol.write(head + self._frame(first))
        else:
            self._protocol.write(head)
        if not allowed:
            self._chunked = False

    def _frame(self, chunk: bytes) -> bytes:
        self.bytes_out += len(chunk)
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def write(self, chunk: bytes) -> None:
        if self.tap is not None:
            self.tap.body(chunk)
        if chunk and self.method != b"HEAD":
            self._protocol.write(self._frame(chunk))

    async def drain(self) -> None:
        """Wait while the client's socket buffer is above its high-water mark."""
        await self._protocol.drain()

    def write_paused(self) -> bool:
        """True while the client's socket buffer is above its high-water mark: :meth:`drain` would
        wait (for a client that stopped reading, forever)."""
        return self._protocol.write_paused()

    def finish(self, last: bytes = b"", trailers: Headers | None = None) -> None:
        """End the response (after ``last``). ``trailers``: fields sent after the body (gRPC's
        status): in the last chunk of a chunked HTTP/1.1 response, in a HEADERS frame on HTTP/2;
        a response with a Content-Length has nowhere to carry them on HTTP/1.1 and drops them."""
        if self.tap is not None:
            self.tap.body(last)
            self.tap.end()
        data = self._frame(last) if last and self.method != b"HEAD" else b""
        if self._chunked:
            if trailers:
                data += b"0\r\n" + b"".join([b"%b: %b\r\n" % (n, v) for n, v in trailers]) + b"\r\n"
            else:
                data += b"0\r\n\r\n"
        if data:
            self._protocol.write(data)
        self.state = ResponseState.DONE

    def abort(self) -> None:
        """The response cannot be completed (upstream died mid-body): close the connection so
        the client sees a truncated message instead of a silently short one."""
        self.close_after = True
        self.state = ResponseState.DONE
        if self.tap is not None:
            self.tap.abort()
        self._protocol.abort()

    def on_server_shutdown(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the server starts a graceful shutdown while this exchange (or
        the connection it upgraded) is still open, so a long-lived stream (Server-Sent Events, a
        WebSocket) can end itself cleanly within the grace period. None removes it."""
        self._protocol.on_shutdown = callback

    # -- a handler that holds the exchange (see server.Handler) --------------------------------
    def loop_time(self) -> float:
        """The event loop's clock (what deadlines are measured in), without a loop lookup."""
        return self._protocol.loop_time()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop serving this exchange (without asking asyncio for the running one)."""
        return self._protocol.event_loop()

    def watch_client(self, on_lost: Callable[[], None] | None) -> None:
        """While the handler holds this exchange, call ``on_lost`` if the client goes away."""
        self.on_lost = on_lost

    def client_lost(self) -> None:
        """The client went away while a handler held this exchange (called by the engine)."""
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def handler_done(self) -> None:
        """The held exchange is answered: the connection goes on to its next request."""
        self.on_lost = None
        self._protocol.handler_done(self)

    def continue_in_task(self, work: Awaitable[None]) -> None:
        """The held exchange needs to await after all: ``work`` finishes it in a task."""
        self.on_lost = None
        self._protocol.continue_in_task(self, work)

    # -- protocol switches -------------------------------------------------------------------
    def switch_protocols(self, headers: Headers) -> ServerProtocol:
        """Answer 101 Switching Protocols with ``headers``; this exchange is then complete and
        the connection belongs to the next protocol, which takes it with
        ``ServerProtocol.take_upgrade`` (a WebSocket session does)."""
        self.start(101, headers)
        self.state = ResponseState.DONE
        return self._protocol

    def switch_to_tunnel(self, headers: Headers, upstream: UpstreamConnection, idle_timeout: float) -> Tunnel:
        """Answer 101 with ``headers`` and tunnel the connection's bytes to ``upstream``, which
        switched protocols too (a proxied WebSocket); await the tunnel's ``closed``."""
        tunnel = Tunnel(self.switch_protocols(headers), upstream, idle_timeout)
        tunnel.start()
        return tunnel
