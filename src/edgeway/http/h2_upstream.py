"""HTTP/2 to an upstream instance: one client connection that multiplexes many streams.

A service that speaks HTTP/2 (a gRPC service, whose clients and servers speak nothing else) is
reached over one connection per instance (:class:`H2Pool` in :mod:`edgeway.http.h2_pool`); each
request is a stream on it (:class:`H2Stream`). The framing, HPACK and the state machines are
the ``h2`` library's; this module is the asyncio side: writing what ``h2`` has to send, handing
each event to its stream, and both directions of flow control:

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
import contextlib
from collections.abc import Iterable
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from hyperframe.frame import GoAwayFrame

from edgeway.http.errors import UpstreamProtocolError, UpstreamReset
from edgeway.http.hpack_encoder import StatelessEncoder

__all__ = ["H2ConnectionDead", "H2Refused", "H2Stream", "H2UpstreamConnection", "StreamReset"]

Headers = list[tuple[bytes, bytes]]

# Windows the gateway grants the instance: a stream may have 1 MiB in flight, the connection
# 16 MiB. Bigger than the RFC's 64 KiB defaults so one stream can fill a fast link; still a
# bound on what one connection may buffer in the gateway.
STREAM_WINDOW: Final = 1 << 20
CONNECTION_WINDOW: Final = 1 << 24
# The gateway builds every header list it sends (lower-case bytes, pseudo-headers first, no
# connection-specific fields), so h2's outbound checks and normalisation are skipped: on a
# proxied call they cost more than the rest of the request's framing. What the instance sends
# is checked as usual.
_H2_CONFIG: Final = h2.config.H2Configuration(
    client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
)


class _ClientConnection(h2.connection.H2Connection):
    """h2's connection, but a graceful GOAWAY (``NO_ERROR``) leaves it open to the frames of
    the streams it lets finish. h2 closes its state machine on any GOAWAY and then refuses every
    frame after it as a protocol error, while RFC 9113 §6.8 has the streams up to the GOAWAY's
    last stream id go on: grpcio's graceful stop sends GOAWAY, then PING, then the answers."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Any], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = ConnectionState.CLIENT_OPEN
        return frames, events


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
        "stream_id",
        "trailers",
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
        self._conn.acknowledge(self.stream_id, flow)
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
            size = min(conn.send_window(self.stream_id), len(view))
            if size <= 0:
                self._window_waiter = conn.loop.create_future()
                try:
                    await self._window_waiter
                finally:
                    self._window_waiter = None
                continue
            last = size == len(view)
            conn.send_data(self.stream_id, bytes(view[:size]), end_stream and last)
            view = view[size:]
            await conn.drain()
        if not data and end_stream:
            conn.end_stream(self.stream_id)

    def reset(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Give up on the stream (the client went away, the deadline passed)."""
        if not self.ended or self.error is None:
            self._conn.reset(self.stream_id, code)

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
        # Keepalive (see the module's doc): the loop time of the last read, and of the PING
        # that has had no answer yet (0: none out).
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._last_read = loop.time()
        self._ping_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._h2 = _ClientConnection(config=_H2_CONFIG)
        self._h2.encoder = StatelessEncoder()  # type: ignore[assignment]  # hpack.Encoder's interface
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.going_away = False  # a GOAWAY came (or we sent one): no new streams
        self.closed: asyncio.Future[None] = loop.create_future()
        # The instance's first SETTINGS: until they arrive its limits (max concurrent streams)
        # are unknown, so a new connection takes no stream before (see H2Pool).
        self.settled: asyncio.Future[None] = loop.create_future()
        self._paused = False
        self._flush_pending = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        state = "closed" if self.closed.done() else "going away" if self.going_away else "open"
        return f"<H2UpstreamConnection {self.instance} {state} streams={len(self.streams)}>"

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        h2c = self._h2
        h2c.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()
        if self._ping_interval is not None:
            self._last_read = self.loop.time()
            self._keepalive = self.loop.call_later(self._ping_interval, self._check_alive)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush()  # the GOAWAY h2 queued for the instance
            self._lose(UpstreamProtocolError(f"HTTP/2 protocol error from {self.instance}: {exc}"))
            return
        for event in events:
            self._event(event)
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
        # len(streams), not h2's open_outbound_streams: that walks every stream on each call.
        return (
            not self.going_away
            and not self.closed.done()
            and len(self.streams) < self._h2.remote_settings.max_concurrent_streams
        )

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def open_stream(self, headers: Iterable[tuple[bytes, bytes]], end_stream: bool = False) -> H2Stream:
        """Start a request: ``headers`` with the pseudo-headers first (``:method``,
        ``:scheme``, ``:authority``, ``:path``). Raises :class:`H2Refused` when the connection
        takes no new streams."""
        if not self.available:
            raise H2Refused(
                f"the HTTP/2 connection to {self.instance} takes no new streams", instance=self.instance
            )
        h2c = self._h2
        stream_id = h2c.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        try:
            h2c.send_headers(stream_id, list(headers), end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            del self.streams[stream_id]
            raise H2Refused(
                f"cannot open a stream to {self.instance}: {exc}", instance=self.instance
            ) from exc
        self._flush_soon()
        return stream

    def send_window(self, stream_id: int) -> int:
        try:
            window = self._h2.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return 0
        return min(window, self._h2.max_outbound_frame_size)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self._h2.send_data(stream_id, data, end_stream=end_stream)
        except h2.exceptions.StreamClosedError as exc:
            raise StreamReset(
                f"the instance {self.instance} closed the stream before the request body was sent",
                instance=self.instance,
            ) from exc
        self._flush_soon()

    def end_stream(self, stream_id: int) -> None:
        try:
            self._h2.end_stream(stream_id)
        except h2.exceptions.StreamClosedError:
            return  # the instance answered and closed already: nothing left to end
        self._flush_soon()

    def acknowledge(self, stream_id: int, flow: int) -> None:
        if flow and not self.closed.done():
            self._h2.acknowledge_received_data(flow, stream_id)
            self._flush_soon()

    def reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream._fail(StreamReset("the stream was cancelled", instance=self.instance, code=code))
        if self.closed.done():
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._h2.reset_stream(stream_id, code)
        self._flush_soon()
        self._close_if_drained()

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
        self._h2.close_connection()
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
                if not self.closed.done():
                    with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush_soon()
        self._close_if_drained()

    def probe(self) -> None:
        """PING now (unless one is out already): a connection whose PING is not acknowledged
        within the ping timeout is aborted and its streams fail (:class:`H2ConnectionDead`)."""
        if not self.closed.done() and not self._ping_sent:
            self._send_ping()

    # -- keepalive ---------------------------------------------------------------------------
    def _send_ping(self) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):  # h2 closed the connection already
            self._h2.ping(b"edgeway\0")
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

    # -- internals ---------------------------------------------------------------------------
    def _flush_soon(self) -> None:
        # One write per loop turn: a stream's HEADERS and DATA, the window updates of every
        # stream read in the turn, go out in one syscall instead of one each.
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream._received(event.data, event.flow_controlled_length, event.stream_ended is not None)
            if event.stream_ended is not None:
                self._forget(event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._headers(list(event.headers), event.stream_ended is not None)
                if event.stream_ended is not None:
                    self._forget(event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._end(list(event.headers))
                self._forget(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._end()
                self._forget(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                code = int(event.error_code or 0)
                kind = H2Refused if code == h2.errors.ErrorCodes.REFUSED_STREAM else StreamReset
                stream._fail(
                    kind(
                        f"the instance {self.instance} reset the stream (code {code})",
                        instance=self.instance,
                        code=code,
                    )
                )
                self._close_if_drained()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams.values() if event.stream_id == 0 else [self.streams.get(event.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream._window_opened()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settled.done():
                self.settled.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event.last_stream_id or 0, int(event.error_code or 0))
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_sent = 0.0  # the instance answers (see _check_alive)

    def _goaway(self, last_stream_id: int, code: int) -> None:
        self.going_away = True
        for stream_id in [s for s in self.streams if s > last_stream_id]:
            stream = self.streams.pop(stream_id)
            stream._fail(
                H2Refused(
                    f"the instance {self.instance} went away (GOAWAY code {code}) "
                    "before it processed the stream",
                    instance=self.instance,
                    code=code,
                )
            )
        if code != h2.errors.ErrorCodes.NO_ERROR:
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
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._fail(
                error if isinstance(error, StreamReset) else StreamReset(str(error), instance=self.instance)
            )
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.settled.done():
            self.settled.set_exception(error if isinstance(error, StreamReset) else StreamReset(str(error)))
            self.settled.exception()  # retrieved: nobody may be waiting
        self.resume_writing()  # release writers waiting on a buffer that will never drain
        if isinstance(error, UpstreamProtocolError) and self.transport is not None:
            self.transport.close()
