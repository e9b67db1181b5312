"""A downstream HTTP/2 connection: each stream becomes an :class:`H2Exchange` and goes to the same
handler an HTTP/1.1 request goes to.

Framing, HPACK and the peer's flow-control windows are the ``h2`` library's; this protocol maps
its events onto exchanges, keeps the connection's limits (concurrent streams, header list size,
receive windows, timeouts) and its abuse budgets (:mod:`edgeway.http.h2.budget`), and writes what
the handlers answer as the windows allow. It is a :class:`~edgeway.http.server.ServerProtocol`
so the listener tracks, ticks, reloads and shuts it down like any connection.

Memory per connection is bounded: the unparsed input by one frame, a header block by the header
list limit, the request bodies of all its streams by its body budget (the connection's receive
window, given back only as bodies are read: see _on_data), each stream's queued response by its
write buffer (a stream whose window stays shut is reset after the send timeout), and ACKs owed to
a peer that stops reading by the transport's buffer (reading pauses while it is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from functools import partial
from typing import Final, cast

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame, SettingsFrame

from edgeway.http.body import BodyStream, empty_body
from edgeway.http.errors import BodyTooLarge, ClientDisconnected, RequestRejected, SendTimeout
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.grpc_wire import is_grpc_content_type, refusal_trailers
from edgeway.http.h2.budget import EMPTY_FRAMES, PINGS, RESETS, SETTINGS, FloodBudget, over_budget
from edgeway.http.h2.exchange import H2Exchange
from edgeway.http.h2.hpack_decoder import IndexedFastDecoder
from edgeway.http.h2.request import MalformedRequest, request_head
from edgeway.http.h2.response_encoder import ResponseEncoder
from edgeway.http.h2.server_connection import ServerConnection
from edgeway.http.headers import reason_phrase
from edgeway.http.limits import Http2Limits, ServerLimits
from edgeway.http.server import ConnectionObserver, ConnState, Handler, ServerProtocol
from edgeway.http.server_tls import TlsInfo

log = logging.getLogger("edgeway.http")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER: Final = 9
# How long a connection closed for cause still reads (and drops) input; see _linger.
_LINGER: Final = 1.0
# HPACK counts 32 bytes of overhead per field (RFC 7541 §4.1) in the header list size.
_FIELD_OVERHEAD: Final = 32
# The HPACK dynamic table the gateway's encoder keeps, at most: the protocol's default size.
_ENCODER_TABLE: Final = 4096
# The connection window every peer starts with (RFC 9113 §6.9.2); only a WINDOW_UPDATE grows it.
_DEFAULT_WINDOW: Final = 65535
# Room for two full frames: below it, a connection's body budget counts as spent (see _starve).
_STARVE_ROOM: Final = 2 * 16384


def _config() -> H2Configuration:
    # Inbound headers are checked by edgeway.http.h2.request (stream errors, not h2's connection
    # errors); outbound ones are built lower-case and stripped by the exchange.
    return H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def _nothing() -> None:
    pass


def _close(work: Awaitable[None] | None) -> None:
    close = getattr(work, "close", None)
    if close is not None:
        close()


class H2ServerProtocol(ServerProtocol):
    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        http2: Http2Limits,
        observer: ConnectionObserver,
        scheme: bytes = b"http",
        tls: TlsInfo | None = None,
    ) -> None:
        super().__init__(handler, limits, observer, scheme, tls)
        self.http2 = http2
        self.stream_write_buffer = http2.stream_write_buffer
        self._h2 = ServerConnection(_config())
        # hpack's encoder (a dynamic-table search and Huffman coding per field) was the largest
        # cost of an HTTP/2 request; a response's fields are mostly static-table names with
        # values unique per response (x-request-id, traceparent), where a table buys little.
        # The exchange builds them lower-case, as bytes, without connection-specific fields.
        self._h2.encoder = ResponseEncoder()  # type: ignore[assignment]
        self._h2.decoder = IndexedFastDecoder()
        self._header_list_size = limits.max_header_bytes + _FIELD_OVERHEAD * (limits.max_headers + 8)
        self._h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.INITIAL_WINDOW_SIZE: http2.initial_window_bytes,
                SettingCodes.MAX_HEADER_LIST_SIZE: self._header_list_size,
            },
        )
        # h2 applies its decoder limit once the peer acknowledges the setting; the HPACK bomb
        # defence holds from the first frame.
        self._h2.decoder.max_header_list_size = self._header_list_size
        self._streams: dict[int, H2Exchange] = {}
        # Streams whose response waits on the connection's window (theirs is open), in order.
        self._conn_blocked: dict[int, H2Exchange] = {}
        self._budget = FloodBudget(http2)
        self._in_receive = False
        # Request body accounting (see _on_data): bytes buffered in the streams' bodies unread,
        # and bytes read or dropped that the connection window has not been given back yet.
        self._body_budget = http2.connection_body_buffer_bytes
        self._body_held = 0
        self._conn_owed = 0
        self._starve_at = max(self._body_budget - _STARVE_ROOM, self._body_budget // 2)
        self._starving = False
        self._flush_scheduled = False
        self._goaway_sent = False
        self._last_active = 0.0
        self._header_block_since = 0.0
        self._header_block: object = None  # the first frame of the block pending since then
        self._paused_since = 0.0

    def __repr__(self) -> str:
        return f"<H2ServerProtocol {self.client} streams={len(self._streams)}>"

    @property
    def streams(self) -> int:
        """Streams open now (their handler running, or their response still going out)."""
        return len(self._streams)

    @property
    def body_held(self) -> int:
        """Request body bytes its streams hold unread now (at most the connection's budget)."""
        return self._body_held

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.state = ConnState.ACTIVE
        self._last_active = self._loop.time()
        self.deadline = 1.0  # truthy: the listener's ticker calls check_deadline every tick
        self._h2.initiate_connection()
        extra = self._body_budget - _DEFAULT_WINDOW
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        self._flush()
        # SETTINGS_MAX_CONCURRENT_STREAMS goes in a frame of its own, beside h2: h2 would treat
        # a stream past it as a connection error, where RFC 9113 §5.1.2 wants a stream error.
        # _on_request refuses it (REFUSED_STREAM), also before the client acknowledged it.
        # (The extra ACK the client sends changes nothing in h2.)
        limit = SettingsFrame(
            0, settings={SettingCodes.MAX_CONCURRENT_STREAMS: self.http2.max_concurrent_streams}
        )
        transport = cast(asyncio.Transport, transport)
        transport.write(limit.serialize())

    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSED:
            return
        self._got_bytes = True
        self._in_receive = True
        try:
            while data:
                # Fed to h2 only up to the first frame past a budget (see _flood_cut): h2 would
                # answer every SETTINGS and PING of the read before the budget was counted.
                cut = self._flood_cut(data)
                if cut is None:
                    chunk, data = data, b""
                elif cut:
                    chunk, data = data[:cut], data[cut:]
                else:
                    return  # the read's first frame went over: GOAWAY sent, the rest dropped
                events = self._h2.receive_data(chunk)
                self._check_buffers()
                owed = 0
                for event in events:
                    if self._ended():
                        return  # a budget or a buffer limit ended the connection
                    owed += self._dispatch(event)
                self._conn_owed += owed
                self._give_back()
                if self._ended():
                    return
        except ProtocolError as exc:
            # h2 has queued its GOAWAY (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, ENHANCE_YOUR_CALM
            # for an oversized header list...): send it and close.
            self._observer.rejected(self, 400, f"HTTP/2 protocol error: {exc}")
            self._in_receive = False
            self._flush()
            self._close_all(ClientDisconnected("HTTP/2 protocol error"))
            self._linger()
            return
        finally:
            self._in_receive = False
        self._flush()

    def _flood_cut(self, data: bytes) -> int | None:
        """Where to stop feeding ``data`` to h2: the offset of its first frame past a budget;
        0 once that frame was the first (the connection is then ended); None: all of it.

        A read too short to hold more frames than the smallest budget has room for (nearly
        every read of a legitimate client) is not walked at all."""
        now = self._loop.time()
        room = self._budget.room(now)
        buffer = self._h2.incoming_buffer
        pending = cast(bytearray, getattr(buffer, "_data", b""))
        if (len(data) + len(pending)) // _FRAME_HEADER < min(room):
            return None
        start, partial = self._frames_start(pending, data)
        # The frame h2 holds the start of counts first (its header is all the walk needs).
        found = over_budget(partial, 0, room) if partial else None
        if found is None:
            found = over_budget(data, start, room)
            if found is None:
                return None
        else:
            found = 0, found[1]
        cut, kind = found
        if cut == 0:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, self._budget.reason(kind))
        return cut

    def _frames_start(self, pending: bytearray, data: bytes) -> tuple[int, bytes]:
        """The offset in ``data`` of its first frame header: after what is left of the preface
        and of the frame h2 holds part of (unparsed bytes start at a frame); and that frame's
        header when this read completes it (b"": none, or its header was walked before)."""
        start = int(getattr(self._h2.incoming_buffer, "_preamble_len", 0))
        held = len(pending)
        if not held:
            return start, b""
        header = bytes(pending[:_FRAME_HEADER])
        completes = False
        if held < _FRAME_HEADER:
            header += data[: _FRAME_HEADER - held]
            if len(header) < _FRAME_HEADER:
                return len(data), b""  # still no whole header: nothing of this read to walk
            completes = True  # its header was cut off last read, so not counted then
        skip = _FRAME_HEADER + int.from_bytes(header[:3], "big") - held
        return skip, header if completes else b""

    def _ended(self) -> bool:
        return self.state is ConnState.CLOSED

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = ConnState.CLOSED
        self._cancel_timer()
        gone = ClientDisconnected("client closed the connection")
        self._close_all(gone)
        self._write.lost(gone)
        self._observer.closed(self)

    def pause_writing(self) -> None:
        # The peer stopped reading: stop reading its frames too, so the ACKs and responses it
        # makes the gateway owe cannot pile up past the transport's buffer.
        super().pause_writing()
        self._paused_since = self._loop.time()
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._paused_since = 0.0
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    # -- events ---------------------------------------------------------------------------
    def _dispatch(self, event: Event) -> int:
        """Handle one h2 event; returns the bytes it consumed of the connection's window."""
        if isinstance(event, DataReceived):
            return self._on_data(event)
        if isinstance(event, RequestReceived):
            self._on_request(
                event.stream_id,
                event.headers,
                event.stream_ended is not None,
            )
        elif isinstance(event, StreamEnded):
            ex = self._streams.get(event.stream_id)
            if ex is not None and not ex.reset:  # a reset stream's body ends with its error
                ex.body.feed_eof()
        elif isinstance(event, WindowUpdated):
            if event.stream_id:
                self._on_window(event.stream_id)
            else:
                self._on_connection_window()
        elif isinstance(event, StreamReset):
            self._on_reset(event.stream_id)
        elif isinstance(event, PingReceived):
            self._spend(PINGS)
        elif isinstance(event, RemoteSettingsChanged):
            self._spend(SETTINGS)
            table = event.changed_settings.get(SettingCodes.HEADER_TABLE_SIZE)
            if table is not None and table.new_value > _ENCODER_TABLE:
                # The peer's HEADER_TABLE_SIZE bounds the gateway's encoder, it is not a size to
                # grow to (RFC 7541 §4.2): with 4 GiB, every response's unique values
                # (x-request-id, traceparent) stayed in the table for the connection's life.
                self._h2.encoder.header_table_size = _ENCODER_TABLE
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._on_window(0)
        elif isinstance(event, TrailersReceived):
            # Request trailers are dropped, as on HTTP/1.1 (the header list limit bounded them).
            if event.stream_ended is None:
                self._reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            elif any(name[:1] == b":" for name, _ in event.headers):
                self._malformed_trailers(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self.closing = True
            if not self._streams:
                self.close()
        return 0

    def _on_request(self, stream_id: int, fields: Headers, ended: bool) -> None:
        if self.closing:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self._streams) >= self.http2.max_concurrent_streams:
            # Also before the client acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (h2 enforces
            # it only from then on).
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            self._spend(RESETS)
            return
        try:
            head = request_head(fields, self._limits)
            if ended and head.content_length:
                # RFC 9113 §8.1.1: the length must equal the DATA sent, and there is none. h2
                # checks DATA against it, never a HEADERS that ends the stream: the service would
                # wait for body bytes, and take the next request on its connection for them.
                raise MalformedRequest("content-length on a request without DATA")
        except MalformedRequest as exc:
            self._observer.rejected(self, 400, f"malformed HTTP/2 request: {exc.reason}")
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            self._spend(RESETS)
            return
        except RequestRejected as exc:
            self._observer.rejected(self, exc.status, exc.reason)
            content_type = next((v for n, v in fields if n == b"content-type"), None)
            self._refuse(stream_id, exc, ended, content_type)
            return
        body: BodyStream
        if ended:
            body = empty_body()
        else:
            # No pausing: the stream's window, given back only as the body is read, is what
            # holds the client back (the high water only says how much window to give).
            window = self.http2.initial_window_bytes
            body = BodyStream(
                _nothing, _nothing, window, window // 2, on_read=partial(self._body_read, stream_id)
            )
        ex = H2Exchange(self, stream_id, head, body, self._scheme)
        ex.body_window = self.http2.initial_window_bytes
        ex.last_data = self._loop.time()
        self._streams[stream_id] = ex
        self._start_stream(ex)

    def _malformed_trailers(self, stream_id: int) -> None:
        """RFC 9113 §8.1: trailers with a pseudo-header make the request malformed, a stream
        error. Handled before the END_STREAM that came with them: the body ends with an error,
        never complete, so a request whose head went upstream with a streamed body is aborted
        there rather than finished."""
        reason = "pseudo-header field in trailers"
        self._observer.rejected(self, 400, f"malformed HTTP/2 request: {reason}")
        self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
        self._spend(RESETS)
        ex = self._streams.get(stream_id)
        if ex is not None and not ex.reset:
            self._stream_gone(ex, ClientDisconnected(f"stream reset: {reason}"))

    def _on_data(self, event: DataReceived) -> int:
        """Feed a DATA frame to its stream's body; returns the connection window it took that is
        owed back at once (padding, bytes of a stream that is gone).

        The body's bytes are given back to the connection window and the stream's window only
        as the handler reads them (_body_read): whatever a client sends and however many streams
        it opens, the bodies of one connection hold at most its body budget, and a stream whose
        handler does not read holds at most its window (or the request buffer of a proxy that
        waits to take a small body whole)."""
        stream_id = event.stream_id
        data = event.data
        consumed = event.flow_controlled_length
        if not data and event.stream_ended is None:
            self._spend(EMPTY_FRAMES)
        ex = self._streams.get(stream_id)
        if ex is None or ex.body.complete or ex.reset:
            return consumed  # a stream already answered or reset: its bytes are dropped
        n = len(data)
        ex.body_window -= consumed
        ex.body_held += n
        self._body_held += n
        body = ex.body
        body.feed(data)  # a body past its route's limit drops it, and _body_read gives it back
        ex.last_data = self._loop.time()
        limit = self._limits.max_body_bytes
        if limit is not None and body.received > limit:
            body.set_error(BodyTooLarge(limit))
        elif consumed > n:
            self._grant(ex)  # padding is never buffered: its window goes back now
        if self._body_held >= self._starve_at:
            self._starve()
        return consumed - n

    def _body_read(self, stream_id: int, n: int) -> None:
        """The stream's handler read ``n`` bytes of its body (or the body dropped them; 0: a
        proxy raised the body's high water to buffer a small body whole)."""
        ex = self._streams.get(stream_id)
        if ex is None or ex.reset:
            return  # released: what it held was given back then
        if n:
            n = min(n, ex.body_held)
            ex.body_held -= n
            self._body_held -= n
            self._conn_owed += n
            if self._body_held < self._starve_at:
                self._starving = False
        elif self._starving:
            ex.body.starve()
        self._grant(ex)
        self._give_back()
        self._schedule_flush()

    def _grant(self, ex: H2Exchange) -> None:
        """Open the stream's window up to its body's high water less what it holds unread, in
        steps of half of that (few WINDOW_UPDATE frames, and the client always has at least half
        a window to send in while the handler keeps reading)."""
        body = ex.body
        if body.complete or ex.reset:
            return
        cap = min(max(body.high_water, self.http2.initial_window_bytes), self._body_budget)
        want = cap - ex.body_held - ex.body_window
        if want < cap // 2:
            return
        try:
            self._h2.increment_flow_control_window(want, stream_id=ex.stream_id)
        except (StreamClosedError, FlowControlError, ProtocolError):
            return
        ex.body_window += want

    def _give_back(self) -> None:
        """Give the connection window back what bodies no longer hold: in quarters of the budget,
        or at once when the client's window runs low."""
        owed = self._conn_owed
        if not owed or self.state is ConnState.CLOSED:
            return
        budget = self._body_budget
        if owed >= budget // 4 or budget - self._body_held - owed < budget // 4:
            with contextlib.suppress(ProtocolError):  # h2 closed the connection already
                self._h2.increment_flow_control_window(owed)
            self._conn_owed = 0

    def _drop_body(self, ex: H2Exchange) -> None:
        """The stream is gone: what its body held unread goes back to the connection window."""
        held = ex.body_held
        if held:
            ex.body_held = 0
            self._body_held -= held
            self._conn_owed += held
            if self._body_held < self._starve_at:
                self._starving = False
            self._give_back()

    def _starve(self) -> None:
        """The streams hold nearly the whole budget: a proxy waiting to buffer a small body whole
        streams what it has instead (it frees the budget as it forwards), or streams waiting for
        the window that only their own reads would reopen would wait on each other."""
        if self._starving:
            return
        self._starving = True
        for ex in self._streams.values():
            if not ex.body.complete:
                ex.body.starve()

    def _on_connection_window(self) -> None:
        """The connection's window grew: the streams that waited on it (not on their own
        windows) send, oldest first, until it is spent again. Not every stream: a client that
        keeps its streams' windows shut and sends a WINDOW_UPDATE of 1 byte on the connection,
        thousands a second, made each one a walk over every open stream."""
        waiting = self._conn_blocked
        h2 = self._h2
        # A stream that spends the window goes back in at the end, and the loop stops there.
        while waiting and h2.outbound_flow_control_window > 0:
            ex = waiting.pop(next(iter(waiting)))
            if not ex.reset:
                self._send_pending(ex)

    def _on_window(self, stream_id: int) -> None:
        if stream_id:
            ex = self._streams.get(stream_id)
            if ex is not None:
                self._send_pending(ex)
            return
        for ex in list(self._streams.values()):
            if ex.pending or (ex.end_requested and not ex.sent_end):
                self._send_pending(ex)

    def _on_reset(self, stream_id: int) -> None:
        self._spend(RESETS)
        ex = self._streams.get(stream_id)
        if ex is not None:
            self._stream_gone(ex, ClientDisconnected("client reset the stream"))

    # -- running a stream's exchange ----------------------------------------------------------
    def _start_stream(self, ex: H2Exchange) -> None:
        ex.held = True  # before the call: the handler may end the exchange at once
        try:
            work = self._handler(ex)
        except Exception as exc:
            if ex.held:
                ex.held = False
                self._failed(ex, exc)
                self._handler_finished(ex)
            return
        if work is None:
            return  # held: the handler ends it with handler_done (it may have already)
        ex.held = False
        self._spawn(ex, work)

    def _spawn(self, ex: H2Exchange, work: Awaitable[None]) -> None:
        ex.task = self._loop.create_task(self._run_stream(ex, work))

    def handler_done(self, ex: Exchange) -> None:
        if isinstance(ex, H2Exchange) and ex.held:
            ex.held = False
            self._handler_finished(ex)

    def continue_in_task(self, ex: Exchange, work: Awaitable[None]) -> None:
        if not isinstance(ex, H2Exchange) or not ex.held or ex.reset or self.state is ConnState.CLOSED:
            # Never started (the stream is gone): closed, so not reported as never awaited.
            _close(work)
            if isinstance(ex, H2Exchange) and ex.held:
                ex.held = False
                self._handler_finished(ex)
            return
        ex.held = False
        self._spawn(ex, work)

    async def _run_stream(self, ex: H2Exchange, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            if not ex.reset and self.state is not ConnState.CLOSED:
                raise
        except Exception as exc:
            if not ex.reset:
                self._failed(ex, exc)
        finally:
            ex.task = None
            self._handler_finished(ex)

    def _handler_finished(self, ex: H2Exchange) -> None:
        ex.handler_finished = True
        if not ex.reset and ex.state is not ResponseState.DONE:
            log.error("handler returned without finishing the response for %r", ex)
            ex.abort()
        self._release(ex)
        self._schedule_flush()

    def _release(self, ex: H2Exchange) -> None:
        """Forget a stream once its handler is done and its response is out (or it was reset)."""
        if not ex.handler_finished or not (ex.sent_end or ex.reset):
            return
        if self._streams.pop(ex.stream_id, None) is None:
            return
        self._conn_blocked.pop(ex.stream_id, None)
        self._drop_body(ex)
        if not ex.reset and not ex.body.complete:
            # RFC 9113 §8.1: answered before the request was complete; the rest is not wanted.
            self._reset(ex.stream_id, ErrorCodes.NO_ERROR)
        if not self._streams:
            self._last_active = self._loop.time()
            if self.closing:
                self._flush()
                self.close()

    def _stream_gone(self, ex: H2Exchange, exc: Exception) -> None:
        """The stream was reset: its body, its queued response and its handler stop."""
        ex.reset = True
        ex.sent_end = True
        ex.pending.clear()
        ex.pending_bytes = 0
        self._drop_body(ex)
        ex.body.set_error(exc)
        self._wake(ex, exc)
        if ex.status == 0:
            ex.status = 499
        task = ex.task
        if task is not None and not task.done():
            # Cancelled after its first step (queued behind it), never before: a task cancelled
            # unstarted would skip the handler's own bookkeeping (its access log line, its
            # in-flight count) and leave the handler's coroutine never awaited.
            self._loop.call_soon(task.cancel)
        elif ex.held:
            ex.client_lost()
        self._release(ex)

    def _close_all(self, exc: Exception) -> None:
        for ex in list(self._streams.values()):
            self._stream_gone(ex, exc)

    # -- writing ---------------------------------------------------------------------------
    def send_head(self, ex: H2Exchange, fields: Headers, end: bool) -> None:
        if ex.reset:
            return
        try:
            self._h2.send_headers_fast(ex.stream_id, fields, end_stream=end)
        except (StreamClosedError, ProtocolError):
            self._stream_gone(ex, ClientDisconnected("stream closed"))
            return
        if end:
            ex.sent_end = True
            self._release(ex)
        self._schedule_flush()

    def send_queued(self, ex: H2Exchange) -> None:
        """What the handler queued: out as far as the windows allow."""
        if ex.reset:
            return
        self._send_pending(ex)
        self._schedule_flush()

    def _send_pending(self, ex: H2Exchange) -> None:
        h2 = self._h2
        stream_id = ex.stream_id
        pending = ex.pending
        try:
            while pending:
                window = h2.local_flow_control_window(stream_id)
                if window <= 0:
                    if not ex.blocked_since:
                        ex.blocked_since = self._loop.time()
                    if h2.outbound_flow_control_window <= 0:
                        self._conn_blocked[stream_id] = ex
                    break
                chunk = pending[0]
                n = min(window, h2.max_outbound_frame_size, len(chunk))
                if n < len(chunk):
                    pending[0] = chunk[n:]
                    chunk = chunk[:n]
                else:
                    pending.popleft()
                ex.pending_bytes -= n
                last = not pending and ex.end_requested and ex.trailers is None
                h2.send_data_fast(stream_id, chunk, end_stream=last)
                if last:
                    ex.sent_end = True
            if not pending:
                ex.blocked_since = 0.0
                if ex.end_requested and not ex.sent_end:
                    if ex.trailers is not None:
                        h2.send_headers_fast(stream_id, ex.trailers, end_stream=True)
                    else:
                        h2.end_stream(stream_id)
                    ex.sent_end = True
        except (StreamClosedError, ProtocolError):
            self._stream_gone(ex, ClientDisconnected("stream closed"))
            return
        if ex.pending_bytes <= self.stream_write_buffer:
            self._wake(ex, None)
        if ex.sent_end:
            self._release(ex)

    def _wake(self, ex: H2Exchange, exc: Exception | None) -> None:
        waiter = ex.drain_waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def drain_stream(self, ex: H2Exchange) -> None:
        """Wait while the stream has more than its write buffer queued, or the connection's
        transport is full; the ticker resets a stream whose window stays shut past the send
        timeout, and that wakes this with the error."""
        while True:
            if ex.reset:
                raise ClientDisconnected("stream reset")
            if self._write.paused:
                await ServerProtocol.drain(self)
            elif ex.pending_bytes > self.stream_write_buffer:
                waiter = ex.drain_waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    ex.drain_waiter = None
            else:
                return

    def reset_stream(self, ex: H2Exchange) -> None:
        """The handler aborted its response (the upstream died mid-body)."""
        if not ex.reset:
            self._reset(ex.stream_id, ErrorCodes.INTERNAL_ERROR)
            self._stream_gone(ex, ClientDisconnected("response aborted"))

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except (StreamClosedError, ProtocolError):
            return
        self._schedule_flush()

    def _refuse(
        self, stream_id: int, reject: RequestRejected, ended: bool, content_type: bytes | None
    ) -> None:
        """Answer a well-formed request a limit refuses with its problem, as on HTTP/1.1; a gRPC
        request with its gRPC status (trailers-only), which is what a gRPC client reads."""
        status = reject.status
        try:
            if is_grpc_content_type(content_type):
                assert content_type is not None
                fields = [(b":status", b"200"), *refusal_trailers(status, reject.reason, content_type)]
                self._h2.send_headers(stream_id, fields, end_stream=True)
            else:
                body = b'{"type":"about:blank","title":"%s","status":%d,"detail":"%s"}' % (
                    reason_phrase(status),
                    status,
                    reject.reason.replace('"', "'").encode(),
                )
                fields = [
                    (b":status", b"%d" % status),
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", b"%d" % len(body)),
                ]
                self._h2.send_headers(stream_id, fields)
                self._h2.send_data(stream_id, body, end_stream=True)
        except (StreamClosedError, ProtocolError, FlowControlError):
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if not ended:
            self._reset(stream_id, ErrorCodes.NO_ERROR)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # Frames of every stream answered in one loop turn leave in one write.
        if self._in_receive or self._flush_scheduled:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        t = self.transport
        if data and t is not None and not t.is_closing():
            t.write(data)

    def write(self, data: bytes) -> None:  # pragma: no cover - nothing writes raw bytes on HTTP/2
        raise RuntimeError("raw writes are not possible on an HTTP/2 connection")

    # -- abuse -----------------------------------------------------------------------------
    def _spend(self, kind: int) -> None:
        reason = self._budget.spend(kind, self._loop.time())
        if reason is not None:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, reason)

    def _check_buffers(self) -> None:
        # h2 checks a frame's length only once the whole frame has arrived, and keeps up to 64
        # CONTINUATION frames of a header block: bound both here, by what a legitimate peer
        # ever needs (one frame; one header list).
        buffer = self._h2.incoming_buffer
        unparsed = len(getattr(buffer, "_data", b""))
        if unparsed > self._h2.max_inbound_frame_size + _FRAME_HEADER + len(PREFACE):
            self._goaway(ErrorCodes.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            return
        block = getattr(buffer, "_headers_buffer", None)
        if not block:
            self._header_block = None
            self._header_block_since = 0.0
        else:
            if block[0] is not self._header_block:
                # A block that was not pending after the last read: its clock starts now. (Not
                # cleared by a request that completed in the same read before it: a client sent
                # one whole request and the start of the next block to escape the timeout.)
                self._header_block = block[0]
                self._header_block_since = self._loop.time()
            if sum(len(f.data) for f in block) > self._header_list_size:
                self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "header block larger than the header list limit")

    def _goaway(self, code: ErrorCodes, reason: str) -> None:
        """End the connection for cause: GOAWAY, then a lingering close."""
        if self.state is ConnState.CLOSED:
            return
        self._observer.rejected(self, 400, f"HTTP/2 connection closed: {reason}")
        with contextlib.suppress(ProtocolError):  # h2 closed it already
            self._h2.close_connection(code, additional_data=reason.encode())
        self._flush()
        self._close_all(ClientDisconnected(f"connection closed: {reason}"))
        self._linger()

    def _linger(self) -> None:
        """Close after what is written, reading (and dropping) what the peer still sends for a
        moment: closing a socket with unread input resets it, and the reset can destroy the
        GOAWAY before the peer reads it (nginx's lingering close)."""
        self.state = ConnState.CLOSED  # data_received drops everything from here
        t = self.transport
        if t is None or t.is_closing():
            return
        if self._write.paused:
            self.abort()  # the peer reads nothing: nothing to wait for
            return
        if t.can_write_eof():
            t.write_eof()
        self._loop.call_later(_LINGER, self.close)

    # -- the listener's ticker, shutdown -------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        if self.state is ConnState.CLOSED:
            return
        limits = self._limits
        if self._header_block_since and now - self._header_block_since > limits.header_read_timeout:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "header block not completed in time")
            return
        if self._paused_since and now - self._paused_since > limits.send_timeout:
            self._observer.rejected(self, 408, "client stopped reading")
            self._close_all(SendTimeout(limits.send_timeout))
            self.abort()
            return
        if not self._streams:
            idle = limits.keepalive_timeout if self._got_bytes else limits.header_read_timeout
            if now - self._last_active > idle:
                self._goaway(ErrorCodes.NO_ERROR, "idle")
            return
        for ex in list(self._streams.values()):
            if ex.blocked_since and now - ex.blocked_since > limits.send_timeout:
                # The client keeps this stream's window shut: what is queued for it is dropped
                # and whatever feeds it (an upstream connection) is released.
                self._observer.rejected(self, 408, "stream window stayed shut")
                self._reset(ex.stream_id, ErrorCodes.CANCEL)
                self._stream_gone(ex, SendTimeout(limits.send_timeout))
            elif (
                not ex.body.complete
                and not ex.reset
                and self._client_may_send(ex)
                and now - ex.last_data > limits.body_read_timeout
            ):
                ex.body.set_error(RequestRejected(408, "request body not received in time"))
                ex.last_data = now
        if self._flush_scheduled is False:
            self._flush()

    def _client_may_send(self, ex: H2Exchange) -> bool:
        """The client has window to send the stream's body in: a silence is its own, not the
        gateway's (a handler that does not read, a budget held by the other streams)."""
        return ex.body_window > 0 and self._body_budget - self._body_held - self._conn_owed > 0

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY naming the last stream taken, which finish; no new ones."""
        self.closing = True
        if not self._goaway_sent and self.state is not ConnState.CLOSED:
            self._goaway_sent = True
            # Written beside h2, not through close_connection: h2 treats a connection that sent
            # GOAWAY as closed and would refuse the frames of the streams still finishing.
            frame = GoAwayFrame(stream_id=0, last_stream_id=self._h2.highest_inbound_stream_id, error_code=0)
            self._flush()
            t = self.transport
            if t is not None and not t.is_closing():
                t.write(frame.serialize())
        for ex in list(self._streams.values()):
            callback, ex.shutdown_callback = ex.shutdown_callback, None
            if callback is not None:
                callback()
        if not self._streams:
            self.close()
