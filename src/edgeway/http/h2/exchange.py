"""The exchange of one HTTP/2 stream: the same :class:`~edgeway.http.exchange.Exchange` a handler
gets for an HTTP/1.1 request, writing its response as HEADERS and DATA frames.

What the handler writes is queued on the stream and sent as the peer's flow-control windows
allow (:class:`~edgeway.http.h2.connection.H2ServerProtocol` sends it); ``drain`` waits while
more than the stream's write buffer is queued, so a client that keeps its window shut holds a
bounded amount, for a bounded time (the send timeout resets the stream).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from edgeway.http.body import BodyStream
from edgeway.http.errors import RequestRejected
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.h2.request import RequestHead

if TYPE_CHECKING:
    from edgeway.http.h2.connection import H2ServerProtocol
    from edgeway.http.server import ServerProtocol

# RFC 9113 §8.2.2: fields that mean something only to an HTTP/1.1 connection; a handler's (or a
# service's) copy is dropped from the frames.
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_NO_BODY_STATUS: Final = frozenset({204, 304})


class H2Exchange(Exchange):
    """One stream's request and response."""

    def __init__(
        self, conn: H2ServerProtocol, stream_id: int, head: RequestHead, body: BodyStream, scheme: bytes
    ) -> None:
        super().__init__(
            conn,
            head.method,
            head.target,
            head.path,
            head.query,
            b"2",
            head.headers,
            head.host,
            body,
            conn.client,
        )
        self._conn = conn
        self.stream_id = stream_id
        self.scheme = scheme
        self.content_length = head.content_length
        # A body without a length reaches an HTTP/1.1 service chunked.
        self.chunked_request = not body.complete and head.content_length is None
        self.request_id = head.request_id
        self.traceparent = head.traceparent
        # -- the response, queued until the peer's windows let it out --
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.end_requested = False  # finish() was called: END_STREAM after what is queued
        self.trailers: Headers | None = None
        self.sent_end = False  # END_STREAM went out (or the stream was reset): nothing more to send
        self.no_body = False  # HEAD, 204, 304: the head ended the stream
        self.blocked_since = 0.0  # loop time the queue first waited for a window; 0: not waiting
        self.drain_waiter: asyncio.Future[None] | None = None
        # -- the request body's window --
        self.body_window = 0  # what the client may still send of the body (its stream window)
        self.body_held = 0  # body bytes received and not read yet (counted in the connection's budget)
        self.last_data = 0.0
        # -- the handler --
        self.held = False
        self.task: asyncio.Task[None] | None = None
        self.handler_finished = False
        self.reset = False  # the stream was reset (by either side): writes go nowhere
        self.shutdown_callback: Callable[[], None] | None = None

    # -- response -------------------------------------------------------------------------
    def _fields(self, status: int, headers: Headers, content_length: int | None, has_body: bool) -> Headers:
        fields: Headers = [(b":status", b"%d" % status)]
        for name, value in headers:
            lname = name.lower()  # RFC 9113 §8.2.1: upper-case names are malformed on HTTP/2
            if lname not in _CONNECTION_SPECIFIC and lname != b"content-length":
                fields.append((lname, value))
        if self.extra_headers:
            for name, value in self.extra_headers:
                fields.append((name.lower(), value))
        if content_length is not None and status >= 200 and status not in _NO_BODY_STATUS:
            # With a body, or for HEAD the length the GET would have had.
            fields.append((b"content-length", b"%d" % content_length))
        return fields

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        if self.tap is not None:
            self.tap.head(status, headers, len(body))
            self.tap.body(body)
            self.tap.end()
        allowed = self._body_allowed(status)
        self.status = status
        self.state = ResponseState.DONE
        fields = self._fields(status, headers, len(body), allowed)
        if allowed and body:
            self.bytes_out += len(body)
            self._conn.send_head(self, fields, False)
            self.pending.append(body)
            self.pending_bytes += len(body)
            self.end_requested = True
            self._conn.send_queued(self)
        else:
            self.no_body = True
            self._conn.send_head(self, fields, True)

    def start(
        self, status: int, headers: Headers, content_length: int | None = None, first: bytes = b""
    ) -> None:
        if self.tap is not None:
            self.tap.head(status, headers, content_length)
            self.tap.body(first)
        allowed = self._body_allowed(status)
        self.status = status
        self.state = ResponseState.STREAMING
        fields = self._fields(status, headers, content_length, allowed)
        if not allowed:
            self.no_body = True
            self._conn.send_head(self, fields, True)
            return
        self._conn.send_head(self, fields, False)
        if first:
            self._queue(first)

    def _queue(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        self._conn.send_queued(self)

    def write(self, chunk: bytes) -> None:
        if self.tap is not None:
            self.tap.body(chunk)
        if chunk and not self.no_body and not self.reset:
            self._queue(chunk)

    def finish(self, last: bytes = b"", trailers: Headers | None = None) -> None:
        if self.tap is not None:
            self.tap.body(last)
            self.tap.end()
        self.state = ResponseState.DONE
        if self.no_body or self.reset:
            return
        if last:
            self.bytes_out += len(last)
            self.pending.append(last)
            self.pending_bytes += len(last)
        if trailers:
            self.trailers = [(name.lower(), value) for name, value in trailers]
        self.end_requested = True
        self._conn.send_queued(self)

    def abort(self) -> None:
        """The response cannot be completed: reset the stream (the connection and its other
        streams go on)."""
        self.state = ResponseState.DONE
        if self.tap is not None:
            self.tap.abort()
        self._conn.reset_stream(self)

    async def drain(self) -> None:
        await self._conn.drain_stream(self)

    def write_paused(self) -> bool:
        return self.pending_bytes > self._conn.stream_write_buffer or self._conn.write_paused()

    def on_server_shutdown(self, callback: Callable[[], None] | None) -> None:
        self.shutdown_callback = callback

    def switch_protocols(self, headers: Headers) -> ServerProtocol:
        # Upgrade does not exist on HTTP/2 (and the engine never marks a stream as asking for
        # one); WebSockets over HTTP/2 (RFC 8441) are not served.
        raise RequestRejected(501, "protocol switches are not supported on HTTP/2")
