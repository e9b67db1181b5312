"""The downstream side: one :class:`ServerProtocol` per client connection.

Parser callbacks parse and enqueue; they never await. Each parsed request head becomes an
:class:`~edgeway.http.exchange.Exchange`; exchanges run one at a time per connection so pipelined
responses leave in request order. A parse error behind a request still in progress is queued as
a value (aiohttp's approach) and answered once the earlier responses are out.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, cast

import httptools
from mypy_extensions import mypyc_attr

from edgeway.http.body import BodyStream, empty_body
from edgeway.http.errors import BodyTooLarge, ClientDisconnected, HttpError, RequestRejected, SendTimeout
from edgeway.http.exchange import Exchange, ResponseState
from edgeway.http.flow import WriteFlow
from edgeway.http.headers import HOST_SYNTAX, connection_tokens, only_chunked, reason_phrase, status_line
from edgeway.http.limits import ServerLimits
from edgeway.http.server_tls import TlsInfo

log = logging.getLogger("edgeway.http")

# The one entry point of a handler, called from the protocol's callbacks when an exchange's turn
# comes. It returns the awaitable that answers the exchange (the engine runs it in a task: an
# ``async def`` handler is one), or None: the handler holds the exchange and answers it from
# callbacks, ending it with :meth:`Exchange.handler_done` (or handing it to a task with
# :meth:`Exchange.continue_in_task`). A proxied request that the upstream answers in one read then
# costs no task, no coroutine and no future.
Handler = Callable[[Exchange], Awaitable[None] | None]


class ConnState(enum.Enum):
    WAITING = "waiting"  # keep-alive idle: no request in progress
    ACTIVE = "active"  # a request is arriving or being answered
    UPGRADED = "upgraded"  # bytes are tunnelled (WebSocket)
    CLOSED = "closed"


class Tunnelled(Protocol):
    """The other end of an upgraded connection (see edgeway.http.tunnel)."""

    def from_downstream(self, data: bytes) -> None: ...
    def downstream_lost(self) -> None: ...
    def downstream_paused(self, paused: bool) -> None: ...


class ConnectionObserver(Protocol):
    """Server-level bookkeeping: connection tracking and logging of rejected requests."""

    def opened(self, conn: ServerProtocol) -> None: ...
    def closed(self, conn: ServerProtocol) -> None: ...
    def rejected(self, conn: ServerProtocol, status: int, reason: str) -> None: ...


_HEADER_SPECIAL: Final = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"connection",
        b"upgrade",
        b"authorization",
        b"content-type",
    }
)
_FRAGMENT: Final = 0x23  # "#", as a byte value (see the check in on_headers_complete)
_SINGLETON_AUTHORIZATION: Final = 1
_SINGLETON_CONTENT_TYPE: Final = 2
_REQUEST_ID: Final = b"x-request-id"
_TRACEPARENT: Final = b"traceparent"
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}
# Raw head bytes allowed beyond max_url_bytes + max_header_bytes (see ServerProtocol._count_head).
_HEAD_SLACK: Final = 4096
# ServerProtocol._deadline_kind
_NO_TIMEOUT: Final = 0
_HEAD_TIMEOUT: Final = 1
_IDLE_TIMEOUT: Final = 2
_BODY_TIMEOUT: Final = 3
# Chunk framing a client may send per chunk without it counting toward the extension budget: a
# size line of 16 hex digits and the CRLFs around the data. Everything beyond (extensions,
# leading zeros, trailers) counts toward ``max_header_bytes`` per message.
_CHUNK_FRAMING: Final = 24
# The HTTP/2 client preface's first line (RFC 9113 §3.4): enough to tell it from HTTP/1.1.
_PREFACE_LINE: Final = b"PRI * HTTP/2.0"


# Compiled builds (mypyc) refuse Python subclasses of compiled classes unless allowed: an HTTP/2
# connection (edgeway.http.h2.connection) is a downstream connection too, serving streams.
@mypyc_attr(allow_interpreted_subclasses=True)
class ServerProtocol(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        observer: ConnectionObserver,
        scheme: bytes = b"http",
        tls: TlsInfo | None = None,
        prior_knowledge: Callable[[ServerProtocol, bytes], None] | None = None,
    ) -> None:
        # -- configuration (shared by every connection of the listener) --
        self._handler = handler
        self._limits = limits
        self._observer = observer
        self._scheme = scheme
        self._loop = asyncio.get_event_loop()
        # Takes a connection whose first bytes are the HTTP/2 client preface (h2c with prior
        # knowledge, RFC 9113 §3.3); None: HTTP/2 is not served and the preface is a bad request.
        self._prior_knowledge = prior_knowledge

        # -- per connection --
        # What the TLS handshake negotiated (edgeway.http.server_tls); None on a plaintext listener.
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.state = ConnState.WAITING
        self.closing = False  # no further request after the current ones (shutdown or Connection: close)
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._task: asyncio.Task[None] | None = None
        self._taken: Exchange | None = None  # the exchange a handler holds (answers from callbacks)
        self._pending_error: RequestRejected | None = None
        self._reject: RequestRejected | None = None
        self._upgrade_leftover: bytes | None = None
        self._tunnel: Tunnelled | None = None
        # set by a long-lived exchange (see Exchange.on_server_shutdown)
        self.on_shutdown: Callable[[], None] | None = None
        # One deadline at a time (head read or keep-alive idle), checked by the listener's ticker:
        # re-arming a TimerHandle twice per request cost more than the parse.
        self.deadline = 0.0  # loop time; 0 = none
        # Which timeout the deadline is (a kind, not a bound method: one fewer object per arm).
        self._deadline_kind = _NO_TIMEOUT
        self._got_bytes = False
        # The first bytes of an HTTP/2 preface that came alone (prior knowledge only).
        self._early = b""
        self._in_head = False  # between on_message_begin and on_headers_complete
        # Bytes of the head being parsed, counted per read from the read after the one it began
        # in (-1 until then: that read may hold the end of the previous request too).
        self._head_read = -1
        # A request with Expect: 100-continue whose body the client holds back until it gets the
        # 100: its body timeout starts when the handler reads (and the 100 goes out).
        self._continue_pending = False

        # -- flow control --
        self._body_paused = False
        self._queue_paused = False
        self._reading_paused = False
        self._write = WriteFlow()

        # -- per request being parsed --
        self._parsing: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._host: bytes | None = None
        self._host_count = 0
        # The last Host found valid: keep-alive clients repeat theirs, checked once per connection.
        self._checked_host: bytes | None = None
        self._singletons = 0  # Authorization and Content-Type lines seen (see _SINGLETON_*)
        self._singleton_twice = b""
        self._content_length: int | None = None
        self._te = b""  # the Transfer-Encoding lines, each after a comma; b"" when none
        self._expect = False
        self._connection = b""
        self._upgrade: bytes | None = None
        self._request_id = b""
        self._traceparent = b""
        # -- per chunked body being parsed --
        self._chunks = 0
        self._framing = 0  # bytes of chunk framing (size lines, extensions, trailers) so far
        self._trailer_bytes = 0
        self._trailers = 0

    def set_handler(self, handler: Handler) -> None:
        """The handler for the requests this connection starts from now on."""
        self._handler = handler

    def __repr__(self) -> str:
        return f"<ServerProtocol {self.client} {self.state.value} queued={len(self._queue)}>"

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else ""
        self._observer.opened(self)
        self._arm(self._limits.header_read_timeout, _HEAD_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.UPGRADED:
            assert self._tunnel is not None
            self._tunnel.from_downstream(data)
            return
        if not self._got_bytes:
            if self._prior_knowledge is not None:
                if self._early:
                    data = self._early + data
                if data[:14] == _PREFACE_LINE:
                    self._got_bytes = True
                    self._prior_knowledge(self, data)
                    return
                if len(data) < 14 and _PREFACE_LINE.startswith(data):
                    # Only the preface's first bytes so far (TCP may split it anywhere): which
                    # protocol is decided once 14 bytes are in. The head timeout still runs.
                    self._early = data
                    return
            self._got_bytes = True
        body_ex = self._parsing
        received = body_ex.body.received if body_ex is not None else 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The head is parsed; what follows belongs to the next protocol. Stop reading until
            # the handler decides whether to tunnel.
            self._upgrade_leftover = data[exc.args[0] :]
            self._set_reading(False)
            return
        except httptools.HttpParserCallbackError:
            reject = self._reject or RequestRejected(400, "malformed request")
            self._fail(reject)
            return
        except httptools.HttpParserError as exc:
            self._fail(RequestRejected(400, str(exc) or "malformed request"))
            return
        if self._in_head:
            self._count_head(len(data))
            return
        ex = self._parsing
        if ex is None:
            return
        if ex is body_ex and ex.chunked_request:
            # This whole read was inside one chunked body: what is not body is framing. llhttp
            # skips chunk extensions without a callback, so this is where they are counted.
            self._count_framing(len(data) - (ex.body.received - received))
        if not self._reading_paused and not self._continue_pending and self._parsing is not None:
            self._arm(self._limits.body_read_timeout, _BODY_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = ConnState.CLOSED
        self._cancel_timer()
        if self._tunnel is not None:
            self._tunnel.downstream_lost()
        gone = ClientDisconnected("client closed the connection")
        for ex in self._queue:
            ex.body.set_error(gone)
        task = self._task
        if task is not None and not task.done():
            # Cancelled after its first step (queued behind it), never before: a task cancelled
            # unstarted skips the handler's own bookkeeping (its in-flight count, its access log
            # line) and leaves its coroutine never awaited. The HTTP/2 streams do the same.
            self._loop.call_soon(task.cancel)
        taken = self._taken
        if taken is not None:
            taken.client_lost()
        self._write.lost(gone)
        self._observer.closed(self)

    def pause_writing(self) -> None:
        self._write.pause()
        if self._tunnel is not None:
            self._tunnel.downstream_paused(True)

    def resume_writing(self) -> None:
        self._write.resume()
        if self._tunnel is not None:
            self._tunnel.downstream_paused(False)

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.state = ConnState.ACTIVE
        self._in_head = True
        self._head_read = -1
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host = None
        self._host_count = 0
        self._singletons = 0
        self._singleton_twice = b""
        self._content_length = None
        self._te = b""
        self._expect = False
        self._connection = b""
        self._upgrade = None
        self._request_id = b""
        self._traceparent = b""
        self._arm(self._limits.header_read_timeout, _HEAD_TIMEOUT)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            self._raise(
                RequestRejected(414, f"request target longer than {self._limits.max_url_bytes} bytes")
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # llhttp reports the trailer section of a chunked body through this same callback.
            self._on_trailer(name, value)
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            self._raise(
                RequestRejected(431, f"request headers larger than {self._limits.max_header_bytes} bytes")
            )
        if len(self._headers) >= self._limits.max_headers:
            self._raise(RequestRejected(431, f"more than {self._limits.max_headers} request headers"))
        lname = name.lower()
        if lname in _HEADER_SPECIAL:
            if lname == b"host":
                self._host = value
                self._host_count += 1
            elif lname == b"content-length":
                self._content_length = int(value)  # llhttp has checked digits and duplicates
            elif lname == b"transfer-encoding":
                self._te += b"," + value
            elif lname == b"expect":
                if value.lower() != b"100-continue":
                    self._raise(RequestRejected(417, "only 'Expect: 100-continue' is supported"))
                self._expect = True
            elif lname == b"connection":
                self._connection += b"," + value
            elif lname == b"upgrade":
                self._upgrade = value.strip().lower()
            else:
                # Fields that must occur once (RFC 9110 §11.6.2, §8.3): with two, the gateway and
                # the service could each act on a different one (auth on the first credential,
                # the service on the last). Refused in on_headers_complete.
                bit = _SINGLETON_AUTHORIZATION if lname == b"authorization" else _SINGLETON_CONTENT_TYPE
                if self._singletons & bit:
                    self._singleton_twice = name
                self._singletons |= bit
        elif lname == _REQUEST_ID:
            self._request_id = value
        elif lname == _TRACEPARENT:
            self._traceparent = value
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self._in_head = False
        p = self._parser
        version = p.get_http_version()
        method = p.get_method()
        if version not in ("1.1", "1.0"):
            self._raise(RequestRejected(505, f"HTTP/{version} is not supported"))
        te = self._te != b""
        if te and version == "1.0":
            # A 1.0 message cannot be chunked; accepting it is a classic smuggling vector.
            self._raise(RequestRejected(400, "Transfer-Encoding in an HTTP/1.0 request"))
        if self._host_count > 1:
            self._raise(RequestRejected(400, "more than one Host header"))
        if self._host_count == 0 and version == "1.1":
            self._raise(RequestRejected(400, "HTTP/1.1 request without Host"))
        if te and not only_chunked(self._te):
            # RFC 9112 §6.1: a coding the server does not implement is a 501. Dropping it (and
            # forwarding the decoded chunks) would hand the service bytes it cannot read.
            self._raise(RequestRejected(501, "transfer codings other than 'chunked' are not supported"))
        if self._host is not None and self._host != self._checked_host:
            if HOST_SYNTAX.fullmatch(self._host) is None:
                self._raise(RequestRejected(400, "invalid Host header"))
            self._checked_host = self._host
        if self._singleton_twice:
            self._raise(
                RequestRejected(400, f"more than one {self._singleton_twice.decode('latin-1')} header")
            )
        if method == b"CONNECT":
            self._raise(RequestRejected(501, "CONNECT is not supported"))
        target = self._url
        host = self._host or b""
        if target[:1] != b"/":
            if target == b"*" and method == b"OPTIONS":
                pass
            elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
                # absolute-form: only accepted when it names the same authority as Host, so a
                # request cannot route by one name and be checked against another.
                rest = target.split(b"//", 1)[1]
                authority, slash, path_part = rest.partition(b"/")
                if not host or authority.lower() != host.lower():
                    self._raise(RequestRejected(400, "absolute-form target does not match Host"))
                target = slash + path_part if slash else b"/"
            else:
                self._raise(RequestRejected(400, "request target must be origin-form"))
        # An int needle: bytes.__contains__ with a bytes needle tries it as an int first and
        # raises inside (~2,200 instructions); ``find`` is a generic method call (~1,100); a
        # byte value is a memchr (~300).
        if _FRAGMENT in target:
            self._raise(RequestRejected(400, "fragment in request target"))
        path, _, query = target.partition(b"?")
        cl = self._content_length
        limit = self._limits.max_body_bytes
        if cl is not None and limit is not None and cl > limit:
            self._raise(RequestRejected(413, f"request body larger than {limit} bytes"))
        ex_body: BodyStream
        if te or (cl is not None and cl > 0):
            if te:
                self._chunks = 0
                self._framing = 0
                self._trailer_bytes = 0
                self._trailers = 0
            self._continue_pending = self._expect
            ex_body = BodyStream(
                self._pause_for_body,
                self._resume_for_body,
                self._limits.read_high_water,
                self._limits.read_low_water,
                self._send_continue if self._expect else None,
            )
        else:
            ex_body = empty_body()
        ex = Exchange(
            self, method, target, path, query, _VERSIONS[version], self._headers, host, ex_body, self.client
        )
        ex.scheme = self._scheme
        ex.content_length = cl
        ex.chunked_request = te
        ex.expect_continue = self._expect
        ex.request_id = self._request_id
        ex.traceparent = self._traceparent
        if (
            self._upgrade is not None
            and version == "1.1"
            and b"upgrade" in connection_tokens(self._connection)
        ):
            # RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored (the request is served,
            # then the connection closes, as for an upgrade the handler declines).
            ex.upgrade = self._upgrade
        if not p.should_keep_alive() or self.closing:
            ex.close_after = True
        if not ex_body.complete:
            self._parsing = ex
        self._queue.append(ex)
        if self._task is None and self._taken is None:
            self._start_next()
        elif len(self._queue) > self._limits.max_pipelined:
            self._queue_paused = True
            self._update_reading()

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex.body.feed(body)
        limit = self._limits.max_body_bytes
        if limit is not None and ex.body.received > limit:
            self._raise(RequestRejected(413, f"request body larger than {limit} bytes"))

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is not None:
            ex.body.feed_eof()
            self._parsing = None
            if self._deadline_kind == _BODY_TIMEOUT:
                self._cancel_timer()

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        # Trailer fields are not part of the request head (RFC 9110 §6.5.1): appending them to
        # the exchange's header list would add headers after the gateway checked and scrubbed
        # them (an identity header a client sends after the body). The engine drops them, and
        # bounds them like the head so a trailer section cannot grow without limit.
        self._trailers += 1
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > self._limits.max_header_bytes:
            self._raise(
                RequestRejected(431, f"request trailers larger than {self._limits.max_header_bytes} bytes")
            )
        if self._trailers > self._limits.max_headers:
            self._raise(RequestRejected(431, f"more than {self._limits.max_headers} request trailers"))

    def _count_framing(self, n: int) -> None:
        self._framing += n
        budget = self._limits.max_header_bytes
        if self._framing > self._chunks * _CHUNK_FRAMING + budget:
            self._fail(RequestRejected(400, f"chunk extensions and trailers larger than {budget} bytes"))

    # -- parse failures -------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        """A read inside a request head. The limits are checked per header line when it is whole,
        and llhttp hands a line over only then: a value (or name) that never ended was buffered
        to the head timeout, joined piece by piece on the event loop. The raw bytes are bounded
        by the limits plus room for the request line's method and version, whitespace and line
        ends."""
        if self._head_read < 0:
            self._head_read = 0  # the read the head began in: not all of it was head
            return
        self._head_read += n
        limit = self._limits.max_url_bytes + self._limits.max_header_bytes + _HEAD_SLACK
        if self._head_read > limit:
            self._fail(RequestRejected(431, f"request head larger than {limit} bytes"))

    def _raise(self, reject: RequestRejected) -> None:
        # httptools turns any exception from a callback into HttpParserCallbackError; keep ours.
        self._reject = reject
        raise reject

    def _fail(self, reject: RequestRejected) -> None:
        """Stop parsing this connection and answer `reject` in order."""
        self._set_reading(False)
        self.closing = True
        self._observer.rejected(self, reject.status, reject.reason)
        ex = self._parsing
        if ex is not None:
            # The request whose body broke is already with a handler: fail its body read.
            self._parsing = None
            ex.close_after = True
            ex.body.set_error(
                BodyTooLarge(self._limits.max_body_bytes or 0) if reject.status == 413 else reject
            )
            return
        if self._task is None and self._taken is None:
            self._write_error(reject)
        else:
            self._pending_error = reject

    def _write_error(self, reject: RequestRejected) -> None:
        body = b'{"type":"about:blank","title":"%s","status":%d,"detail":"%s"}' % (
            status_line(reject.status)[13:-2],
            reject.status,
            reject.reason.replace('"', "'").encode(),
        )
        self.write(
            status_line(reject.status)
            + b"content-type: application/problem+json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
            + body
        )
        self.close()

    # -- running exchanges ---------------------------------------------------------------
    def _start_next(self) -> None:
        ex = self._queue[0]
        self._taken = ex  # before the call: the handler may end the exchange at once
        try:
            work = self._handler(ex)
        except Exception as exc:
            if self._taken is ex:
                self._taken = None
                self._failed(ex, exc)
                self._finish(ex)
            return
        if work is None:
            return  # held: the handler ends it with handler_done (it may have already)
        self._taken = None
        self._task = self._loop.create_task(self._run(ex, work))

    def loop_time(self) -> float:
        return self._loop.time()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def handler_done(self, ex: Exchange) -> None:
        """An exchange the handler held (it returned None) is answered: the next request may start."""
        if self._taken is ex:
            self._taken = None
            self._finish(ex)

    def continue_in_task(self, ex: Exchange, work: Awaitable[None]) -> None:
        """A taken exchange needs to await after all: ``work`` finishes it in a task."""
        if self._taken is ex:
            self._taken = None
            if self.state is ConnState.CLOSED:
                close = getattr(work, "close", None)
                if close is not None:
                    close()  # never started: no "coroutine was never awaited" warning
                return
            self._task = self._loop.create_task(self._run(ex, work))

    async def _run(self, ex: Exchange, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            if self.state is not ConnState.CLOSED:
                raise
            return
        except Exception as exc:
            self._failed(ex, exc)
        self._finish(ex)

    def _failed(self, ex: Exchange, exc: Exception) -> None:
        """What a handler raised: its problem while nothing was sent, else a cut response."""
        if isinstance(exc, HttpError):
            if ex.state is ResponseState.PENDING:
                ex.close_after = ex.close_after or not ex.body.complete
                detail = exc.reason if isinstance(exc, RequestRejected) else str(exc)
                ex.respond_problem(exc.status, reason_phrase(exc.status).decode(), detail)
            else:
                ex.abort()
            return
        log.error("unhandled error in handler for %r", ex, exc_info=exc)
        if ex.state is ResponseState.PENDING:
            ex.respond_problem(500, "Internal Server Error")
        else:
            ex.abort()

    def _finish(self, ex: Exchange) -> None:
        self._task = None
        if self.state is ConnState.CLOSED or self.state is ConnState.UPGRADED:
            return
        self._queue.popleft()
        if ex.state is not ResponseState.DONE:
            log.error("handler returned without finishing the response for %r", ex)
            ex.abort()
            return
        if not ex.body.complete or self._upgrade_leftover is not None:
            # Unread body or an upgrade the handler declined: the byte stream is not at a
            # message boundary any more, so the connection cannot carry another request.
            ex.close_after = True
        if ex.close_after:
            self.close()
            return
        if self._queue_paused and len(self._queue) <= self._limits.max_pipelined // 2:
            self._queue_paused = False
            self._update_reading()
        if self._queue:
            self._start_next()
        elif self._pending_error is not None:
            self._write_error(self._pending_error)
        elif self.closing:
            self.close()
        elif self._parsing is None and not self._in_head:
            self.state = ConnState.WAITING
            self._arm(self._limits.keepalive_timeout, _IDLE_TIMEOUT)

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    async def drain(self) -> None:
        try:
            await self._write.drain(self._limits.send_timeout)
        except SendTimeout as exc:
            # The client holds the response (and, proxied, an upstream connection) without
            # reading: drop it. The handler gets the error and gives back what it holds.
            self._observer.rejected(self, exc.status, str(exc))
            self.abort()
            raise

    def write_paused(self) -> bool:
        """True while the transport's buffer is above its high-water mark (drain would wait)."""
        return self._write.paused

    def _send_continue(self) -> None:
        # Sent when the handler starts reading the body, i.e. once it has accepted the request.
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._continue_pending = False
        if self._parsing is not None and not self._reading_paused:
            self._arm(self._limits.body_read_timeout, _BODY_TIMEOUT)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # flushes what is buffered, then closes

    # -- reading flow control ------------------------------------------------------------
    def _pause_for_body(self) -> None:
        self._body_paused = True
        self._update_reading()

    def _resume_for_body(self) -> None:
        self._body_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        on = not (self._body_paused or self._queue_paused)
        self._set_reading(on)
        # The body timeout measures the client, not the gateway: it does not run while the
        # gateway has stopped reading.
        if not on:
            if self._deadline_kind == _BODY_TIMEOUT:
                self._cancel_timer()
        elif self._parsing is not None and not self._continue_pending and not self._reading_paused:
            self._arm(self._limits.body_read_timeout, _BODY_TIMEOUT)

    def _set_reading(self, on: bool) -> None:
        t = self.transport
        if t is None or t.is_closing() or on != self._reading_paused:
            return
        self._reading_paused = not on
        if on:
            t.resume_reading()
        else:
            t.pause_reading()

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, delay: float, kind: int) -> None:
        self.deadline = self._loop.time() + delay
        self._deadline_kind = kind

    def _cancel_timer(self) -> None:
        self.deadline = 0.0
        self._deadline_kind = _NO_TIMEOUT

    def check_deadline(self, now: float) -> None:
        """Called by the listener's ticker; fires the pending timeout once it is due."""
        if self.deadline and now >= self.deadline:
            kind = self._deadline_kind
            self._cancel_timer()
            if kind == _HEAD_TIMEOUT:
                self._on_head_timeout()
            elif kind == _IDLE_TIMEOUT:
                self._on_idle_timeout()
            elif kind == _BODY_TIMEOUT:
                self._on_body_timeout()

    def _on_head_timeout(self) -> None:
        if not self._got_bytes and not self._queue:
            self.close()  # a connection that never sent anything gets no response
            return
        reject = RequestRejected(408, "request head not received in time")
        self._observer.rejected(self, 408, reject.reason)
        if self._task is None and self._taken is None:
            self._write_error(reject)
        else:
            self._pending_error = reject
            self._set_reading(False)

    def _on_body_timeout(self) -> None:
        if self._parsing is not None:
            # The handler reading the body gets the 408: it answers it if nothing has gone to the
            # client yet, else cuts the response; either way the connection closes.
            self._fail(RequestRejected(408, "request body not received in time"))

    def _on_idle_timeout(self) -> None:
        if self.state is ConnState.WAITING:
            self.close()

    # -- shutdown and upgrade --------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful shutdown: finish the current exchange, accept no further request."""
        self.closing = True
        if self.on_shutdown is not None:
            # A stream or an upgraded connection that ends itself (a WebSocket close handshake).
            callback, self.on_shutdown = self.on_shutdown, None
            callback()
            return
        if self.state is ConnState.WAITING or (
            self._task is None and self._taken is None and not self._queue
        ):
            self.close()

    def hand_over(self) -> asyncio.Transport | None:
        """Give the connection to another protocol before any request was parsed (an HTTP/2
        client's preface): this one is closed as far as the listener is concerned."""
        self.state = ConnState.CLOSED
        self._cancel_timer()
        self._observer.closed(self)
        return self.transport

    def take_upgrade(self, tunnel: Tunnelled) -> bytes:
        """Hand the connection to a tunnel after a 101; returns bytes the client sent early."""
        self.state = ConnState.UPGRADED
        self._tunnel = tunnel
        self._cancel_timer()
        leftover = self._upgrade_leftover or b""
        self._upgrade_leftover = None
        self._queue.clear()
        self._task = None
        self._reading_paused = True
        self._set_reading(True)
        return leftover

    @property
    def is_idle(self) -> bool:
        return self.state is ConnState.WAITING
