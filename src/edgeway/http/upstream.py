"""The upstream side: one :class:`UpstreamConnection` per TCP connection to a service instance.

A connection carries one exchange at a time. Its state lives in one enum, changed in one place
(`_set_state`), and decides whether the pool may hand it out again: only a connection whose last
response was read to its end, whose request was fully sent and which both sides keep alive is
reusable. Anything else — unread bytes, an early response, bytes arriving while idle — closes it.

A response ends where its framing says (its length, its last chunk, or no body at all for HEAD,
1xx, 204 and 304); a byte after that end, in the same read or a later one, means the stream is out
of sync with the exchanges, so the connection is closed and nothing after the end is parsed: the
bytes could be a whole second response, and whoever read it would get the service's (or an
attacker's) answer to some other request.

A 101 is accepted only when the exchange asked for that upgrade (:meth:`expect_upgrade`) and
the 101 answers it; any other 101 fails the exchange with :class:`UpstreamProtocolError`, so no
caller can end up tunnelling a protocol it did not ask for.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from edgeway.http.body import BodyStream
from edgeway.http.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamTlsError,
)
from edgeway.http.flow import WriteFlow
from edgeway.http.headers import connection_tokens, only_chunked
from edgeway.http.limits import PoolLimits
from edgeway.http.upstream_tls import describe_tls_error

# Per exchange: a C static in a compiled build, not an attribute lookup on the module.
_monotonic: Final = time.monotonic

if TYPE_CHECKING:
    from edgeway.http.tunnel import Tunnel

Headers = list[tuple[bytes, bytes]]

_NO_BODY: Final = frozenset({204, 304})


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp where it is (it has no other way)."""


class UpstreamState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"  # in the pool, clean
    BUSY = "busy"  # an exchange is in progress
    UPGRADED = "upgraded"  # tunnelling after 101; never returns to the pool
    CLOSED = "closed"

    @property
    def is_idle(self) -> bool:
        return self is UpstreamState.IDLE


class ResponseHead:
    # A plain class, not a NamedTuple: one is made per response, and in a compiled build
    # (mypyc) a class is built in C where a NamedTuple runs its generated Python __new__.
    __slots__ = ("chunked", "content_length", "headers", "keep_alive", "status", "upgraded")

    def __init__(
        self,
        status: int,
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        upgraded: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.upgraded = upgraded

    def __repr__(self) -> str:
        return f"ResponseHead(status={self.status}, headers={self.headers!r})"


class UpstreamListener(Protocol):
    """Follows an exchange from callbacks instead of awaiting its head (the proxy's fast path).

    ``upstream_data`` runs after every read is parsed (``conn.head``, ``conn.body`` and
    ``conn.response_complete`` tell where the response is); ``upstream_failed`` once, when the
    exchange fails (reset, timeout, invalid response). A listener that starts awaiting after all
    sets ``conn.listener = None``: from then on failures reach the body stream as usual.
    """

    def upstream_data(self, conn: UpstreamConnection) -> None: ...
    def upstream_failed(self, exc: Exception) -> None: ...


# How often armed upstream deadlines are checked; timeouts are accurate to this.
DEADLINE_TICK: Final = 0.05


class DeadlineWatch:
    """Fires the deadlines of a set of upstream connections from one ticker.

    A timer handle per phase per request (connect, first byte, total) cost ~2 µs each plus an
    exception object built in advance; a deadline is two attribute writes and a set insertion,
    and one ticker serves every connection of a pool.
    """

    def __init__(self) -> None:
        self._armed: set[UpstreamConnection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, conn: UpstreamConnection) -> None:
        self._armed.add(conn)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(DEADLINE_TICK, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._armed):
            deadline = conn.deadline
            if not deadline:
                self._armed.discard(conn)
            elif now >= deadline:
                self._armed.discard(conn)
                conn.expire()
        self._handle = loop.call_later(DEADLINE_TICK, self._tick) if self._armed else None

    def fail_unanswered(self, make_error: Callable[[], Exception]) -> None:
        """Fail every exchange still waiting for its response head, at once.

        Every exchange in flight has a deadline armed, so the armed set is already the list of
        them: keeping another one would cost every request a set insertion for an event that
        is rare. An exchange whose response has started is left to its timeouts: its client
        already has part of the answer, and no other instance could take over."""
        for conn in list(self._armed):
            if conn.deadline and conn.head is None and conn.state is UpstreamState.BUSY:
                conn.fail(make_error())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed.clear()


class UpstreamConnection(asyncio.Protocol):
    def __init__(
        self,
        instance: str,
        limits: PoolLimits,
        on_idle_lost: Callable[[UpstreamConnection], None],
        deadlines: DeadlineWatch | None = None,
    ) -> None:
        # -- per connection --
        self.instance = instance
        self._deadlines = deadlines or DeadlineWatch()
        self.deadline = 0.0  # loop time at which the armed phase expires; 0: none armed
        self._deadline_phase = ""
        self._deadline_seconds = 0.0
        self._limits = limits
        self._on_idle_lost = on_idle_lost
        self._loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.state = UpstreamState.CONNECTING
        self.idle_since = 0.0
        self.exchanges = 0
        self._write = WriteFlow()
        self._reading_paused = False
        self._tunnel: Tunnel | None = None
        # Whether this connection counts against its pool's limit; the pool clears it exactly
        # once when the connection leaves (see ConnectionPool._forget).
        self.holds_slot = False

        # -- per exchange --
        self._parser: httptools.HttpResponseParser | None = None
        # The parser of the last exchange, kept for the next one: llhttp parses consecutive
        # responses of a persistent connection, and a new parser per exchange cost ~2% of a
        # proxied request. Not kept after a HEAD (llhttp did not know that response had no body).
        self._spare_parser: httptools.HttpResponseParser | None = None
        self._head_waiter: asyncio.Future[ResponseHead] | None = None
        self.listener: UpstreamListener | None = None
        self.head: ResponseHead | None = None  # the final response head, once parsed
        # Bound once: every exchange's body gets them (like the parser, they point back here).
        self._pause_cb: Callable[[], None] = self._pause_reading
        self._resume_cb: Callable[[], None] = self._resume_reading
        self.body: BodyStream = BodyStream(self._pause_cb, self._resume_cb, 1, 0)
        self._headers: Headers = []
        self._cl: int | None = None
        self._chunked = False
        self._te = b""  # the Transfer-Encoding lines, each after a comma
        # Bytes read while no final head was parsed, then bytes read since the last body bytes:
        # each bounded by max_response_head_bytes.
        self._head_bytes = 0
        self._head_request = False
        self._close_delimited = False
        self.got_bytes = False  # any response byte seen: after that a retry is never safe
        self.request_sent = False
        self.response_complete = False
        self._keep_alive = True
        self.upgrade_leftover = b""
        # The upgrade this exchange asked for (expect_upgrade); b"": none, so a 101 is refused.
        self._upgrade_protocol = b""
        self._upgrade_accept = b""
        self._overrun = False  # bytes followed the end of the response

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.instance} {self.state.value} exchanges={self.exchanges}>"

    def _set_state(self, state: UpstreamState) -> None:
        self.state = state

    @property
    def is_reusable(self) -> bool:
        return (
            self.state is UpstreamState.BUSY
            and self.request_sent
            and self.response_complete
            and self._keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        self._set_state(UpstreamState.BUSY)

    def data_received(self, data: bytes) -> None:
        if self.state is UpstreamState.UPGRADED:
            assert self._tunnel is not None
            self._tunnel.from_upstream(data)
            return
        if self.state is not UpstreamState.BUSY or self._parser is None or self.response_complete:
            # Bytes nobody asked for: the stream is out of sync. Never reuse it.
            self.close()
            return
        self.got_bytes = True
        had_head = self.head is not None  # a bool: mypyc miscompiled the narrowing of a local copy
        if not had_head:
            self._head_bytes += len(data)
        body_before = self.body.received
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade_leftover = data[exc.args[0] :]
            self._pause_reading()
        except httptools.HttpParserError as exc:
            if self._overrun:
                # The response is whole and stands; what followed it is dropped unparsed, and
                # the connection with it.
                self._keep_alive = False
                self.abort()
            else:
                cause = exc.__context__  # what a callback raised, when one did
                err = (
                    cause
                    if isinstance(cause, UpstreamProtocolError)
                    else UpstreamProtocolError(
                        f"invalid response from {self.instance}: {exc}", instance=self.instance
                    )
                )
                self._fail(err)
                self.close()
                return
        if had_head and not self.response_complete:
            # After the head, reads that bring no body bytes (chunk framing, the trailer section)
            # are bounded like the head: llhttp hands trailer values over whole, so httptools
            # joined an endless one piece by piece on the event loop, though they are dropped.
            if self.body.received != body_before:
                self._head_bytes = 0
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_response_head_bytes:
                    limit = self._limits.max_response_head_bytes
                    self._fail(
                        self._head_too_large(f"{limit} bytes past its body without ending the response")
                    )
                    self.close()
                    return
        elif not had_head:
            if self.head is not None:
                self._head_bytes = 0  # the head is whole: from here the bytes past the body count
            elif self._head_bytes > self._limits.max_response_head_bytes:
                # Checked per read, so at most one read's worth past the limit is ever buffered.
                limit = self._limits.max_response_head_bytes
                self._fail(self._head_too_large(f"a response head larger than {limit} bytes"))
                self.close()
                return
        if self.listener is not None:
            self.listener.upstream_data(self)

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self._set_state(UpstreamState.CLOSED)
        if was is UpstreamState.UPGRADED and self._tunnel is not None:
            self._tunnel.upstream_lost()
            return
        if was is UpstreamState.IDLE:
            self._on_idle_lost(self)
            return
        if self._close_delimited and self.head is not None:
            # HTTP/1.0-style body: the end of the connection is the end of the body.
            self.response_complete = True
            self.body.feed_eof()
        else:
            self._fail(self._lost_mid_exchange(exc))
        self._write.lost(UpstreamReset(f"{self.instance} closed the connection", instance=self.instance))

    def _lost_mid_exchange(self, exc: Exception | None) -> UpstreamError:
        """What the exchange is told when the connection ends before its response did."""
        if not self.got_bytes and self.transport is not None:
            if isinstance(exc, ssl.SSLError):
                # A TLS alert after the handshake (TLS 1.3 checks the client certificate only
                # then): the service refused the session, the request never reached it.
                reason = describe_tls_error(exc)
                return UpstreamTlsError(
                    f"TLS with {self.instance} failed: {reason}", instance=self.instance, reason=reason
                )
            if self.exchanges == 1 and self.transport.get_extra_info("ssl_object") is not None:
                return UpstreamReset(
                    f"{self.instance} closed the TLS connection before answering its first request "
                    "(a service that requires a client certificate does this when it gets none it trusts)",
                    instance=self.instance,
                )
        return UpstreamReset(f"{self.instance} closed the connection mid-exchange", instance=self.instance)

    def pause_writing(self) -> None:
        self._write.pause()
        if self._tunnel is not None:
            self._tunnel.upstream_paused(True)

    def resume_writing(self) -> None:
        self._write.resume()
        if self._tunnel is not None:
            self._tunnel.upstream_paused(False)

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.response_complete:
            self._stop_overrun()  # a second message behind the response, in the same read
        self._headers = []
        self._cl = None
        self._chunked = False
        self._te = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head is not None:
            # The trailer section of a chunked response (llhttp reports it through this same
            # callback): never part of the head the proxy forwards, so it is dropped.
            return
        if len(self._headers) >= self._limits.max_response_headers:
            raise self._head_too_large(f"more than {self._limits.max_response_headers} header fields")
        lname = name.lower()
        if lname == b"content-length":
            self._cl = int(value)
        elif lname == b"transfer-encoding":
            self._te += b"," + value
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            # RFC 9110 §15; llhttp takes any three digits. "099" went out as "HTTP/1.1 99" and
            # 600+ as it came: responses a client cannot frame.
            raise UpstreamProtocolError(
                f"{self.instance} answered with status {status}, not 100-599", instance=self.instance
            )
        if 100 <= status < 200 and status != 101:
            return  # interim response (100 Continue, 103 Early Hints): the real one follows
        if self._te:
            if not only_chunked(self._te):
                # The proxy decodes chunked only: passing ``gzip, chunked`` on without the gzip
                # (or a close-delimited ``gzip``) would hand the client bytes it cannot read.
                raise UpstreamProtocolError(
                    f"{self.instance} answered with a transfer coding other than chunked",
                    instance=self.instance,
                )
            self._chunked = True
        if status == 101:
            refused = self._switch_refused()
            if refused:
                raise UpstreamProtocolError(refused, instance=self.instance)
        self._keep_alive = bool(self._parser.should_keep_alive())
        no_body = self._head_request or status in _NO_BODY or status == 101
        self._close_delimited = not no_body and self._cl is None and not self._chunked
        head = ResponseHead(status, self._headers, self._cl, self._chunked, self._keep_alive, status == 101)
        self.head = head
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_result(head)
        if no_body and status != 101:
            # llhttp cannot know a HEAD response has no body; this parser is discarded after
            # the exchange, and any stray bytes later make the connection unusable.
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.response_complete:
            self._stop_overrun()  # a body behind a response that has none (HEAD)
        self.body.feed(body)

    def _head_too_large(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.instance} sent {what}", instance=self.instance)

    def _stop_overrun(self) -> None:
        self._overrun = True
        raise _StopParsing("bytes after the end of the response")

    def _switch_refused(self) -> str:
        """Why this 101 cannot be accepted ("" when it answers the upgrade that was asked for)."""
        wanted = self._upgrade_protocol
        if not wanted:
            return "upstream switched protocols without being asked"
        upgrade = connection = accept = b""
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"upgrade":
                upgrade = value.strip().lower()
            elif lname == b"connection":
                connection += b"," + value
            elif lname == b"sec-websocket-accept":
                accept = value.strip()
        if upgrade != wanted:
            return f"upstream switched protocols to {upgrade.decode('latin-1')!r}, not {wanted.decode()!r}"
        if b"upgrade" not in connection_tokens(connection):
            return "upstream switched protocols without 'Connection: upgrade'"
        if accept != self._upgrade_accept:
            return "upstream switched protocols with a Sec-WebSocket-Accept that does not answer the key"
        return ""

    def on_message_complete(self) -> None:
        if self.head is not None and not self.response_complete:
            self._complete()

    def _complete(self) -> None:
        self.response_complete = True
        self.body.feed_eof()

    def _fail(self, exc: Exception) -> None:
        listener = self.listener
        if listener is not None:
            self.listener = None
            listener.upstream_failed(exc)
            return
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_exception(exc)
            w.exception()  # consumed by whoever awaits; avoid "never retrieved" noise
        elif not self.response_complete:
            self.body.set_error(exc)

    # -- exchange API (used by the proxy) -------------------------------------------------
    def begin(self, head_request: bool, listener: UpstreamListener | None = None) -> None:
        """Prepare for a new exchange on this connection; ``listener`` follows it by callbacks
        (then there is no head waiter)."""
        self._set_state(UpstreamState.BUSY)
        self.exchanges += 1
        spare, self._spare_parser = self._spare_parser, None
        self._parser = spare if spare is not None and not head_request else httptools.HttpResponseParser(self)
        self.listener = listener
        self.head = None
        self._head_waiter = None if listener is not None else self._loop.create_future()
        self.body = BodyStream(
            self._pause_cb,
            self._resume_cb,
            self._limits.read_high_water,
            self._limits.read_low_water,
        )
        self._head_request = head_request
        self._close_delimited = False
        self._head_bytes = 0
        self.got_bytes = False
        self.request_sent = False
        self.response_complete = False
        self._keep_alive = True
        self._upgrade_protocol = b""
        if self._reading_paused:
            self._resume_reading()

    def expect_upgrade(self, protocol: bytes, accept: bytes) -> None:
        """This exchange asks to switch to ``protocol`` (lower-case): a 101 is accepted only when
        it names that protocol, says ``Connection: upgrade`` and carries ``accept`` as its
        Sec-WebSocket-Accept (RFC 6455 §4.1). Call after :meth:`begin`."""
        self._upgrade_protocol = protocol
        self._upgrade_accept = accept

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            raise UpstreamReset(f"{self.instance} connection is closed", instance=self.instance)
        t.write(data)

    async def drain(self) -> None:
        await self._write.drain()

    def head_waiter(self) -> asyncio.Future[ResponseHead]:
        assert self._head_waiter is not None
        return self._head_waiter

    async def read_head(self) -> ResponseHead:
        assert self._head_waiter is not None
        return await self._head_waiter

    def mark_idle(self) -> None:
        self._set_state(UpstreamState.IDLE)
        self._spare_parser = None if self._head_request else self._parser
        self._parser = None
        self.listener = None
        self.idle_since = _monotonic()

    def set_deadline(self, at: float, phase: str, seconds: float) -> None:
        """Fail the exchange with UpstreamTimeout(phase, seconds) if it is still going at `at`."""
        self.deadline = at
        self._deadline_phase = phase
        self._deadline_seconds = seconds
        self._deadlines.arm(self)

    def clear_deadline(self) -> None:
        self.deadline = 0.0

    def expire(self) -> None:
        """The armed deadline passed (called by the DeadlineWatch)."""
        self.deadline = 0.0
        self.fail(UpstreamTimeout(self._deadline_phase, self._deadline_seconds, instance=self.instance))

    def fail(self, exc: Exception) -> None:
        """End the exchange with `exc` (a timeout): waiters raise it, the connection is dropped."""
        self._fail(exc)
        self._keep_alive = False
        self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = False
            self.transport.resume_reading()

    # -- upgrade ------------------------------------------------------------------------
    def take_upgrade(self, tunnel: Tunnel) -> bytes:
        self._set_state(UpstreamState.UPGRADED)
        self._tunnel = tunnel
        leftover, self.upgrade_leftover = self.upgrade_leftover, b""
        self._resume_reading()
        return leftover
