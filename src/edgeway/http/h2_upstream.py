"""HTTP/2 to an upstream instance: one client connection that multiplexes many streams.

A service that speaks HTTP/2 (a gRPC service, whose clients and servers speak nothing else) is
reached over one connection per instance (:class:`H2Pool` in :mod:`edgeway.http.h2_pool`); each
request is a stream on it (:class:`H2Stream`). On the gateway's hot path we own the engine for
speed: this module reads and writes the frames itself (:mod:`edgeway.http.h2_frames`; HPACK is
``hpack``'s decoder and the gateway's stateless encoder) instead of through the ``h2`` library,
whose frame objects and state machines were most of a proxied gRPC call's CPU. It is a client
of a known service, so it keeps the part of RFC 9113 a client needs: stream states as a client
sees them, the peer's settings and limits, ``PING``, ``GOAWAY``, ``RST_STREAM``, trailers, a
connection error (``GOAWAY`` and close) for any frame a server must not send, a stream error
(``RST_STREAM``) for a malformed response; and both directions of flow control:

- **received data** is acknowledged (its window handed back to the instance) only when the
  stream's reader takes it, so a slow client holds the instance back instead of the gateway
  buffering without bound: at most one stream window per stream, one connection window per
  connection;
- **sent data** waits for the instance's window (``WINDOW_UPDATE``) and for the socket's buffer
  (``pause_writing``), so a slow instance holds the client back.

A ``GOAWAY`` from the instance closes the connection to new streams at once; the streams it
names as unprocessed (id above ``last_stream_id``) fail with :class:`H2Refused` — the instance
never saw them, so they may go to another connection whatever their method — while the others
finish. The connection closes when its last stream has.

With a ping interval, a connection that has read nothing for that long sends a ``PING``; when
its ACK does not arrive within the ping timeout the instance is taken for dead (a
stopped process, a host gone from the network: TCP says nothing for minutes): the connection is
aborted and its streams fail with :class:`H2ConnectionDead`, so the pool opens a new one.
"""

from __future__ import annotations

import asyncio
import collections
import re
import struct
from collections.abc import Iterable
from typing import Final, cast

from hpack import HPACKError

from edgeway.http import h2_frames as fr
from edgeway.http.errors import UpstreamProtocolError, UpstreamReset
from edgeway.http.h2.hpack_decoder import IndexedFastDecoder
from edgeway.http.h2_frames import FrameType
from edgeway.http.hpack_encoder import StatelessEncoder

__all__ = ["H2ConnectionDead", "H2Refused", "H2Stream", "H2UpstreamConnection", "StreamReset"]

Headers = list[tuple[bytes, bytes]]

# Windows the gateway grants the instance: a stream may have 1 MiB in flight, the connection
# 16 MiB. Bigger than the RFC's 64 KiB defaults so one stream can fill a fast link; still a
# bound on what one connection may buffer in the gateway.
STREAM_WINDOW: Final = 1 << 20
CONNECTION_WINDOW: Final = 1 << 24
# What the gateway accepts as one response header list (SETTINGS_MAX_HEADER_LIST_SIZE), and as
# the raw header block that carries it (HEADERS + CONTINUATION frames).
HEADER_LIST_SIZE: Final = 1 << 16
_MAX_HEADER_BLOCK: Final = 2 * HEADER_LIST_SIZE
# Fields a response must not carry on HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# A field name: a lower-case token (RFC 9110 §5.1, RFC 9113 §8.2.1). A value: no NUL, CR or LF,
# no whitespace at either end (RFC 9113 §8.2.1) — a CR/LF passed on to an HTTP/1.1 client would
# split its response.
_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


class _ConnectionError(Exception):
    """A frame the instance must not have sent: the connection ends (GOAWAY with ``code``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamReset(UpstreamReset):
    """The instance reset the stream (``RST_STREAM``) or the connection ended under it."""

    def __init__(self, message: str, *, instance: str = "", code: int = 0) -> None:
        super().__init__(message, instance=instance)
        self.code = code


class H2ConnectionDead(StreamReset):
    """The connection stopped answering (a keepalive PING went unanswered) or was cut because
    its instance left the service: the streams on it fail, and the next call opens another."""


class H2Refused(StreamReset):
    """The instance did not process the stream (``REFUSED_STREAM``, or above a ``GOAWAY``'s
    last stream id): safe to send again on another connection, whatever the method."""


class H2Stream:
    """One request/response on an :class:`H2UpstreamConnection`."""

    __slots__ = (
        "_conn",
        "_data",
        "_data_waiter",
        "_head",
        "_window_waiter",
        "ended",
        "error",
        "head_seen",
        "local_closed",
        "recv_window",
        "remote_closed",
        "send_window",
        "stream_id",
        "trailers",
        "unacked",
    )

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._head: asyncio.Future[Headers] = conn.loop.create_future()
        self._data: collections.deque[tuple[bytes, int]] = collections.deque()
        self._data_waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None
        self.trailers: Headers | None = None
        self.ended = False  # the instance ended its side (END_STREAM), or the stream failed
        self.error: StreamReset | None = None
        # The stream's state as RFC 9113 §5.1 has it, from the client's side.
        self.local_closed = False  # END_STREAM or RST_STREAM sent
        self.remote_closed = False  # END_STREAM or RST_STREAM received
        self.head_seen = False  # the final response head arrived: a HEADERS now is trailers
        self.send_window = conn.peer_initial_window
        self.recv_window = STREAM_WINDOW
        self.unacked = 0  # bytes read but not yet handed back to the instance

    def __repr__(self) -> str:
        return f"<H2Stream {self.stream_id} on {self._conn.instance}>"

    # -- the response --------------------------------------------------------------------
    async def response(self) -> Headers:
        """The response's headers (``:status`` among them), once they arrive."""
        return await self._head

    @property
    def has_data(self) -> bool:
        """Body bytes are waiting to be read."""
        return bool(self._data)

    async def read(self) -> bytes:
        """The next chunk of the response body; ``b""`` at its end. Taking a chunk hands its
        window back to the instance."""
        while not self._data:
            if self.error is not None:
                raise self.error
            if self.ended:
                return b""
            self._data_waiter = self._conn.loop.create_future()
            try:
                await self._data_waiter
            finally:
                self._data_waiter = None
        chunk, flow = self._data.popleft()
        self._conn.acknowledge(self, flow)
        return chunk

    # -- the request ---------------------------------------------------------------------
    async def send(self, data: bytes, end_stream: bool = False) -> None:
        """Send request body bytes as the instance's windows allow; ``end_stream`` ends the
        request after them."""
        conn = self._conn
        view = memoryview(data)
        while view:
            if self.error is not None:
                raise self.error
            if self.local_closed:
                # Reset by us after the instance had answered: nothing more may go out.
                raise StreamReset(f"the stream to {conn.instance} was reset", instance=conn.instance)
            size = min(conn.send_window(self), len(view))
            if size <= 0:
                self._window_waiter = conn.loop.create_future()
                conn.blocked[self.stream_id] = self
                try:
                    await self._window_waiter
                finally:
                    self._window_waiter = None
                    conn.blocked.pop(self.stream_id, None)
                continue
            last = size == len(view)
            conn.send_data(self, bytes(view[:size]), end_stream and last)
            view = view[size:]
            await conn.drain()
        if not data and end_stream:
            conn.end_stream(self)

    def reset(self, code: int = fr.CANCEL) -> None:
        """Give up on the stream (the client went away, the deadline passed)."""
        if not self.ended or self.error is None:
            self._conn.reset_stream(self, code)

    # -- from the connection ---------------------------------------------------------------
    def _headers(self, headers: Headers, ended: bool) -> None:
        if not self._head.done():
            self._head.set_result(headers)
        if ended:
            self._end()

    def _received(self, data: bytes, flow: int, ended: bool) -> None:
        self._data.append((data, flow))
        if ended:
            self.ended = True
        self._wake_reader()

    def _end(self, trailers: Headers | None = None) -> None:
        if trailers is not None:
            self.trailers = trailers
        self.ended = True
        self._wake_reader()

    def _fail(self, error: StreamReset) -> None:
        if self.error is None:
            self.error = error
        self.ended = True
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a caller that never asks is not a "never retrieved"
        self._wake_reader()
        self._window_opened()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _window_opened(self) -> None:
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _malformed(headers: Headers, trailers: bool) -> str | None:
    """Why a response head (or its trailers) is malformed (RFC 9113 §8.1.1, §8.3.2), or None."""
    status = False
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if trailers or regular or status or name != b":status":
                return f"pseudo-header {name!r} out of place"
            if len(value) != 3 or not value.isdigit() or not b"100" <= value <= b"599":  # RFC 9110 §15
                return f"malformed :status {value!r}"
            status = True
            continue
        regular = True
        if _NAME.fullmatch(name) is None:
            return f"field name {name!r} is not a lower-case token"
        if _BAD_VALUE.search(value) is not None:
            return f"the value of {name!r} has NUL, CR, LF or surrounding whitespace"
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            return f"connection-specific field {name!r}"
    if not trailers and not status:
        return "no :status"
    return None


class H2UpstreamConnection(asyncio.Protocol):
    """An HTTP/2 client connection to one instance (h2c with prior knowledge, or TLS with ALPN
    ``h2``: the caller opens the transport, this protocol speaks on it)."""

    def __init__(
        self,
        instance: str,
        loop: asyncio.AbstractEventLoop,
        ping_interval: float | None = None,
        ping_timeout: float = 20.0,
    ) -> None:
        self.instance = instance
        self.loop = loop
        self.encoder = StatelessEncoder()
        self.decoder = IndexedFastDecoder(max_header_list_size=HEADER_LIST_SIZE)
        # Keepalive (see the module's doc): the loop time of the last read, and of the PING
        # that has had no answer yet (0: none out).
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._last_read = loop.time()
        self._ping_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        # Streams waiting for send window (also one the instance has answered in full already).
        self.blocked: dict[int, H2Stream] = {}
        self.going_away = False  # a GOAWAY came (or we sent one): no new streams
        self.closed: asyncio.Future[None] = loop.create_future()
        # The instance's first SETTINGS: until they arrive its limits (max concurrent streams)
        # are unknown, so a new connection takes no stream before (see H2Pool).
        self.settled: asyncio.Future[None] = loop.create_future()
        self._paused = False
        self._flush_pending = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._out: list[bytes] = []
        self._buffer = b""
        self._next_stream_id = 1
        # The instance's settings (RFC 9113 §6.5.2 defaults until its SETTINGS say otherwise).
        self._max_concurrent = 1 << 31
        self.peer_initial_window = fr.DEFAULT_WINDOW
        self._max_frame_out = fr.DEFAULT_FRAME_SIZE
        self._send_window = fr.DEFAULT_WINDOW  # the connection's, for what we send
        self._recv_window = CONNECTION_WINDOW  # the connection's, for what the instance sends
        self._conn_unacked = 0
        # A header block whose CONTINUATION frames are still coming: stream, END_STREAM, parts.
        self._block: list[bytes] | None = None
        self._block_stream = 0
        self._block_ended = False
        self._block_size = 0
        self._pings: dict[bytes, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        state = "closed" if self.closed.done() else "going away" if self.going_away else "open"
        return f"<H2UpstreamConnection {self.instance} {state} streams={len(self.streams)}>"

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        settings = {
            fr.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            fr.ENABLE_PUSH: 0,
            fr.MAX_HEADER_LIST_SIZE: HEADER_LIST_SIZE,
        }
        self._out += [
            fr.CONNECTION_PREFACE,
            fr.settings_frame(settings),
            fr.window_update_frame(0, CONNECTION_WINDOW - fr.DEFAULT_WINDOW),
        ]
        self._flush()
        if self._ping_interval is not None:
            self._last_read = self.loop.time()
            self._keepalive = self.loop.call_later(self._ping_interval, self._check_alive)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self.closed.done():
            return
        try:
            self._receive(data)
        except _ConnectionError as exc:
            self._fail_connection(exc.code, str(exc))
            return
        self._flush_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        why = f": {exc}" if exc is not None else ""
        self._lose(
            StreamReset(f"the HTTP/2 connection to {self.instance} closed{why}", instance=self.instance)
        )

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- for streams -------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Open, not going away, and below the instance's concurrent-stream limit."""
        return (
            not self.going_away
            and not self.closed.done()
            and len(self.streams) < self._max_concurrent
            and self._next_stream_id <= fr.MAX_STREAM_ID
        )

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def open_stream(self, headers: Iterable[tuple[bytes, bytes]], end_stream: bool = False) -> H2Stream:
        """Start a request: ``headers`` with the pseudo-headers first (``:method``,
        ``:scheme``, ``:authority``, ``:path``), lower-case, no connection-specific fields (the
        gateway builds them so; they are sent as given). Raises :class:`H2Refused` when the
        connection takes no new streams."""
        if not self.available:
            raise H2Refused(
                f"the HTTP/2 connection to {self.instance} takes no new streams", instance=self.instance
            )
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        block = self.encoder.encode(headers)
        self._out += fr.headers_frames(stream_id, block, end_stream, self._max_frame_out)
        stream.local_closed = end_stream
        self._flush_soon()
        return stream

    def send_window(self, stream: H2Stream) -> int:
        """Bytes ``stream`` may send now: its window, the connection's, one frame."""
        if stream.local_closed:
            return 0
        return min(stream.send_window, self._send_window, self._max_frame_out)

    def send_data(self, stream: H2Stream, data: bytes, end_stream: bool) -> None:
        if stream.local_closed:
            raise StreamReset(
                f"the instance {self.instance} closed the stream before the request body was sent",
                instance=self.instance,
            )
        size = len(data)
        stream.send_window -= size
        self._send_window -= size
        self._out.append(fr.data_frame(stream.stream_id, data, end_stream))
        stream.local_closed = end_stream
        self._flush_soon()

    def end_stream(self, stream: H2Stream) -> None:
        if stream.local_closed:
            return  # reset, or ended already: nothing left to end
        stream.local_closed = True
        self._out.append(fr.data_frame(stream.stream_id, b"", True))
        self._flush_soon()

    def acknowledge(self, stream: H2Stream, flow: int) -> None:
        """``flow`` bytes of ``stream`` were read: their window goes back to the instance, in
        updates of half a window (not one per frame)."""
        if not flow or self.closed.done():
            return
        self._release(flow)
        if not stream.remote_closed:
            stream.unacked += flow
            if stream.unacked >= STREAM_WINDOW // 2:
                self._out.append(fr.window_update_frame(stream.stream_id, stream.unacked))
                stream.recv_window += stream.unacked
                stream.unacked = 0
                self._flush_soon()

    def _release(self, flow: int) -> None:
        """``flow`` bytes of the connection's window are free again: handed back to the
        instance once half the window is."""
        self._conn_unacked += flow
        if self._conn_unacked >= CONNECTION_WINDOW // 2:
            self._out.append(fr.window_update_frame(0, self._conn_unacked))
            self._recv_window += self._conn_unacked
            self._conn_unacked = 0
            self._flush_soon()

    def reset(self, stream_id: int, code: int) -> None:
        """Reset the open stream ``stream_id`` (see :meth:`reset_stream`)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            self.reset_stream(stream, code)

    def reset_stream(self, stream: H2Stream, code: int) -> None:
        """``RST_STREAM`` unless the stream is closed both ways; its reader and writer fail."""
        if self.streams.pop(stream.stream_id, None) is not None:
            stream._fail(StreamReset("the stream was cancelled", instance=self.instance, code=code))
        else:
            stream._window_opened()
        if self.closed.done():
            return
        if not (stream.local_closed and stream.remote_closed):
            stream.local_closed = stream.remote_closed = True
            self._out.append(fr.rst_stream_frame(stream.stream_id, code))
            self._flush_soon()
        self._close_if_drained()

    def ping(self, payload: bytes = b"\0" * 8) -> asyncio.Future[None]:
        """Send ``PING`` (8 bytes); the future is done when its ACK arrives (or fails when the
        connection ends first)."""
        waiter = self._pings.get(payload)
        if waiter is None:
            waiter = self._pings[payload] = self.loop.create_future()
            self._out.append(fr.ping_frame(payload))
            self._flush_soon()
        return waiter

    async def drain(self) -> None:
        if not self._paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Say GOAWAY and close the connection at once (streams in flight fail)."""
        if self.closed.done():
            return
        self.going_away = True
        self._out.append(fr.goaway_frame(0, fr.NO_ERROR))
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Take no new streams; close once the last one has ended (a drained instance)."""
        self.going_away = True
        self._close_if_drained()

    def abort(self, error: StreamReset) -> None:
        """Fail every stream with ``error`` and drop the connection without a word (its peer may
        read nothing any more: a GOAWAY would only wait in the socket's buffer)."""
        self._lose(error)
        if self.transport is not None:
            self.transport.abort()

    def fail_unanswered(self, error: StreamReset) -> None:
        """Fail the streams still waiting for their response head with ``error``, and reset
        them (CANCEL) so the instance stops working on them: it was found down. Streams it is
        answering go on (a PING sent with :meth:`probe` judges whether it still answers)."""
        for stream_id, stream in list(self.streams.items()):
            if not stream._head.done():
                del self.streams[stream_id]
                stream._fail(error)
                if not (stream.local_closed and stream.remote_closed):
                    stream.local_closed = stream.remote_closed = True
                    self._out.append(fr.rst_stream_frame(stream_id, fr.CANCEL))
        self._flush_soon()
        self._close_if_drained()

    def probe(self) -> None:
        """PING now (unless one is out already): a connection whose PING is not acknowledged
        within the ping timeout is aborted and its streams fail (:class:`H2ConnectionDead`)."""
        if not self.closed.done() and not self._ping_sent:
            self._send_ping()

    # -- keepalive ---------------------------------------------------------------------------
    def _send_ping(self) -> None:
        self._out.append(fr.ping_frame(b"edgeway\0"))
        self._flush()
        self._ping_sent = self.loop.time()
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._keepalive = self.loop.call_later(self._ping_timeout, self._check_alive)

    def _check_alive(self) -> None:
        self._keepalive = None
        if self.closed.done():
            return
        now = self.loop.time()
        if self._ping_sent:
            # Unanswered (its ACK clears it): other frames do not count, those of a peer that
            # stopped may still arrive from the socket's buffer after the PING went out.
            wait = self._ping_timeout - (now - self._ping_sent)
            if wait > 0:
                self._keepalive = self.loop.call_later(wait, self._check_alive)
                return
            self.abort(
                H2ConnectionDead(
                    f"the instance {self.instance} did not answer a PING within {self._ping_timeout:g}s",
                    instance=self.instance,
                )
            )
            return
        interval = self._ping_interval
        if interval is None:
            return  # a probe's PING was answered; no keepalive
        idle = now - self._last_read
        if idle < interval:
            self._keepalive = self.loop.call_later(interval - idle, self._check_alive)
            return
        self._send_ping()

    # -- writing -----------------------------------------------------------------------------
    def _flush_soon(self) -> None:
        # One write per loop turn: a stream's HEADERS and DATA, the window updates of every
        # stream read in the turn, go out in one syscall instead of one each.
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        out = self._out
        if not out:
            return
        data = b"".join(out)
        out.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    # -- reading -----------------------------------------------------------------------------
    def _receive(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        pos = 0
        unpack = _FRAME_HEADER.unpack_from
        while end - pos >= fr.FRAME_HEADER:
            high, low, kind, flags, stream_id = unpack(buffer, pos)
            size = (high << 8) | low
            if size > fr.DEFAULT_FRAME_SIZE:
                # SETTINGS_MAX_FRAME_SIZE is never raised: the default is the limit.
                raise _ConnectionError(fr.FRAME_SIZE_ERROR, f"a frame of {size} bytes")
            start = pos + fr.FRAME_HEADER
            if end - start < size:
                break
            pos = start + size
            self._frame(kind, flags, stream_id & fr.MAX_STREAM_ID, buffer[start:pos])
            if self.closed.done():
                return
        self._buffer = buffer[pos:]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != FrameType.CONTINUATION:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "a header block was not continued")
        if kind == FrameType.DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == FrameType.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == FrameType.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == FrameType.SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif not self.settled.done():
            # RFC 9113 §3.4: the server's preface is a SETTINGS frame.
            raise _ConnectionError(fr.PROTOCOL_ERROR, "the server's first frame was not SETTINGS")
        elif kind == FrameType.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == FrameType.RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == FrameType.PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == FrameType.GOAWAY:
            if stream_id != 0:
                raise _ConnectionError(fr.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnectionError(fr.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            last, code = fr.parse_goaway(payload)
            self._goaway(last, code)
        elif kind == FrameType.PRIORITY:
            if stream_id == 0:
                raise _ConnectionError(fr.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _ConnectionError(fr.FRAME_SIZE_ERROR, "PRIORITY not 5 bytes")
        elif kind == FrameType.PUSH_PROMISE:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
        # Frames of unknown types are ignored (RFC 9113 §4.1).

    def _known(self, stream_id: int, kind: str) -> H2Stream | None:
        """The open stream ``stream_id``; None for one closed before (its frames are dropped);
        a connection error for one never opened (or a server-initiated one)."""
        stream = self.streams.get(stream_id)
        if stream is None and (stream_id == 0 or stream_id % 2 == 0 or stream_id >= self._next_stream_id):
            raise _ConnectionError(fr.PROTOCOL_ERROR, f"{kind} on stream {stream_id}, never opened")
        return stream

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow = len(payload)
        if flow > self._recv_window:
            raise _ConnectionError(fr.FLOW_CONTROL_ERROR, "DATA past the connection's window")
        self._recv_window -= flow
        data = _unpad(flags, payload) if flags & fr.PADDED else payload
        stream = self._known(stream_id, "DATA")
        if stream is None:
            # A stream we reset or that ended: its bytes only count against the connection.
            self._release(flow)
            return
        if not stream.head_seen:
            self._stream_error(stream, fr.PROTOCOL_ERROR, "DATA before the response's headers")
            self._release(flow)
            return
        if flow > stream.recv_window:
            raise _ConnectionError(fr.FLOW_CONTROL_ERROR, "DATA past the stream's window")
        stream.recv_window -= flow
        ended = bool(flags & fr.END_STREAM)
        if data:
            stream._received(data, flow, ended)
        else:
            self.acknowledge(stream, flow)  # padding alone: nothing for the reader to take
            if ended:
                stream._end()
        if ended:
            stream.remote_closed = True
            self._forget(stream_id)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & fr.PADDED:
            payload = _unpad(flags, payload)
        if flags & fr.PRIORITY_FLAG:
            if len(payload) < 5:
                raise _ConnectionError(fr.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        ended = bool(flags & fr.END_STREAM)
        if flags & fr.END_HEADERS:
            self._header_block(stream_id, payload, ended)
            return
        self._block = [payload]
        self._block_stream = stream_id
        self._block_ended = ended
        self._block_size = len(payload)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._block
        if block is None or stream_id != self._block_stream:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "CONTINUATION without a header block")
        block.append(payload)
        self._block_size += len(payload)
        if self._block_size > _MAX_HEADER_BLOCK:
            raise _ConnectionError(fr.ENHANCE_YOUR_CALM, "a header block past the header list limit")
        if flags & fr.END_HEADERS:
            self._block = None
            self._header_block(stream_id, b"".join(block), self._block_ended)

    def _header_block(self, stream_id: int, block: bytes, ended: bool) -> None:
        try:
            # Decoded whatever the stream's state: the HPACK table is the connection's.
            headers = cast(Headers, self.decoder.decode(block, raw=True))
        except HPACKError as exc:
            raise _ConnectionError(fr.COMPRESSION_ERROR, f"header block: {exc}") from None
        stream = self._known(stream_id, "HEADERS")
        if stream is None:
            return  # the answer of a stream we reset
        if stream.head_seen:
            if not ended:
                self._stream_error(stream, fr.PROTOCOL_ERROR, "trailers without END_STREAM")
                return
            problem = _malformed(headers, trailers=True)
            if problem is not None:
                self._stream_error(stream, fr.PROTOCOL_ERROR, f"malformed trailers: {problem}")
                return
            stream._end(list(headers))
        else:
            problem = _malformed(headers, trailers=False)
            if problem is not None:
                self._stream_error(stream, fr.PROTOCOL_ERROR, f"malformed response: {problem}")
                return
            status = headers[0][1]
            if status[0] == 0x31:  # 1xx: informational, the final head follows (RFC 9110 §15.2)
                if ended or status == b"101":
                    self._stream_error(stream, fr.PROTOCOL_ERROR, f"informational {status!r} ends the stream")
                return
            stream.head_seen = True
            stream._headers(list(headers), ended)
        if ended:
            stream.remote_closed = True
            self._forget(stream_id)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(fr.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = fr.parse_u32(payload) & fr.MAX_WINDOW
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(fr.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > fr.MAX_WINDOW:
                raise _ConnectionError(fr.FLOW_CONTROL_ERROR, "the connection's window past 2^31-1")
            for waiting in list(self.blocked.values()):
                waiting._window_opened()
            return
        stream = self.streams.get(stream_id) or self.blocked.get(stream_id)
        if stream is None:
            self._known(stream_id, "WINDOW_UPDATE")
            return
        if increment == 0:
            self._stream_error(stream, fr.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            return
        stream.send_window += increment
        if stream.send_window > fr.MAX_WINDOW:
            self._stream_error(stream, fr.FLOW_CONTROL_ERROR, "the stream's window past 2^31-1")
            return
        stream._window_opened()

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & fr.ACK:
            if payload:
                raise _ConnectionError(fr.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _ConnectionError(fr.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for code, value in fr.parse_settings(payload):
            if code == fr.HEADER_TABLE_SIZE:
                if value != self.encoder.header_table_size:
                    self.encoder.header_table_size = value
            elif code == fr.ENABLE_PUSH:
                if value > 1:
                    raise _ConnectionError(fr.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif code == fr.MAX_CONCURRENT_STREAMS:
                self._max_concurrent = value
            elif code == fr.INITIAL_WINDOW_SIZE:
                if value > fr.MAX_WINDOW:
                    raise _ConnectionError(fr.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1")
                self._initial_window(value)
            elif code == fr.MAX_FRAME_SIZE:
                if not fr.DEFAULT_FRAME_SIZE <= value <= fr.MAX_FRAME_SIZE_LIMIT:
                    raise _ConnectionError(fr.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE of {value}")
                self._max_frame_out = value
        self._out.append(fr.settings_frame({}, ack=True))
        if not self.settled.done():
            self.settled.set_result(None)

    def _initial_window(self, value: int) -> None:
        """A new SETTINGS_INITIAL_WINDOW_SIZE changes every open stream's window by the
        difference (RFC 9113 §6.9.2), which may leave one negative."""
        delta = value - self.peer_initial_window
        self.peer_initial_window = value
        for stream in {**self.blocked, **self.streams}.values():
            stream.send_window += delta
            if stream.send_window > fr.MAX_WINDOW:
                raise _ConnectionError(fr.FLOW_CONTROL_ERROR, "a stream's window past 2^31-1")
            if delta > 0:
                stream._window_opened()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(fr.FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        stream = self._known(stream_id, "RST_STREAM") or self.blocked.get(stream_id)
        if stream is None:
            return
        self.streams.pop(stream_id, None)
        stream.local_closed = stream.remote_closed = True
        code = fr.parse_u32(payload)
        kind = H2Refused if code == fr.REFUSED_STREAM else StreamReset
        stream._fail(
            kind(
                f"the instance {self.instance} reset the stream (code {code})",
                instance=self.instance,
                code=code,
            )
        )
        self._close_if_drained()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ConnectionError(fr.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ConnectionError(fr.FRAME_SIZE_ERROR, "PING not 8 bytes")
        if not flags & fr.ACK:
            self._out.append(fr.ping_frame(payload, ack=True))
            return
        self._ping_sent = 0.0  # the instance answers (see _check_alive)
        waiter = self._pings.pop(payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- endings -----------------------------------------------------------------------------
    def _stream_error(self, stream: H2Stream, code: int, message: str) -> None:
        """The instance broke the protocol on one stream: reset it; the others go on."""
        self.streams.pop(stream.stream_id, None)
        if not (stream.local_closed and stream.remote_closed):
            self._out.append(fr.rst_stream_frame(stream.stream_id, code))
        stream.local_closed = stream.remote_closed = True
        stream._fail(
            StreamReset(
                f"HTTP/2 stream error from {self.instance}: {message}", instance=self.instance, code=code
            )
        )
        self._close_if_drained()

    def _fail_connection(self, code: int, message: str) -> None:
        """The instance broke the protocol: GOAWAY with ``code``, and every stream fails."""
        self._out.append(fr.goaway_frame(0, code, message.encode()))
        self._flush()
        self._lose(UpstreamProtocolError(f"HTTP/2 protocol error from {self.instance}: {message}"))

    def _goaway(self, last_stream_id: int, code: int) -> None:
        self.going_away = True
        for stream_id in [s for s in self.streams if s > last_stream_id]:
            stream = self.streams.pop(stream_id)
            stream.local_closed = stream.remote_closed = True
            stream._fail(
                H2Refused(
                    f"the instance {self.instance} went away (GOAWAY code {code}) "
                    "before it processed the stream",
                    instance=self.instance,
                    code=code,
                )
            )
        if code != fr.NO_ERROR:
            # An error GOAWAY ends the connection: what is left in flight fails too.
            self._lose(
                StreamReset(
                    f"the instance {self.instance} ended the connection (GOAWAY code {code})",
                    instance=self.instance,
                    code=code,
                )
            )
            if self.transport is not None:
                self.transport.close()
            return
        self._close_if_drained()

    def _forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.going_away and not self.streams and self.transport is not None and not self.closed.done():
            self.transport.close()

    def _lose(self, error: StreamReset | UpstreamProtocolError) -> None:
        self.going_away = True
        streams, self.streams = {**self.blocked, **self.streams}, {}
        reset = error if isinstance(error, StreamReset) else StreamReset(str(error), instance=self.instance)
        for stream in streams.values():
            stream._fail(reset)
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.settled.done():
            self.settled.set_exception(reset)
            self.settled.exception()  # retrieved: nobody may be waiting
        pings, self._pings = self._pings, {}
        for waiter in pings.values():
            if not waiter.done():
                waiter.set_exception(reset)
                waiter.exception()
        self.resume_writing()  # release writers waiting on a buffer that will never drain
        if isinstance(error, UpstreamProtocolError) and self.transport is not None:
            self.transport.close()


_FRAME_HEADER: Final = struct.Struct(">HBBBL")


def _unpad(flags: int, payload: bytes) -> bytes:
    """A padded frame's content (RFC 9113 §6.1): the pad length byte and the padding off."""
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(fr.PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1 : len(payload) - payload[0]]
