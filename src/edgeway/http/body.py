"""A streamed message body between a protocol callback (producer) and a handler (consumer).

The protocol feeds chunks from ``data_received``; it never awaits. The handler awaits ``read()``.
When more than ``high_water`` bytes wait unread, the producer is paused (its transport stops
reading) and resumed once the consumer has taken the buffer below ``low_water`` — so a fast peer
can never make edgeway hold more than about ``high_water`` bytes of one body in memory.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from typing import Final

from edgeway.http.errors import BodyTooLarge


class BodyStream:
    __slots__ = (
        "_buffered",
        "_chunks",
        "_eof",
        "_error",
        "_high",
        "_limit",
        "_low",
        "_on_first_read",
        "_on_read",
        "_pause",
        "_paused",
        "_resume",
        "_starved",
        "_waiter",
        "received",
    )

    def __init__(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        high_water: int,
        low_water: int,
        on_first_read: Callable[[], None] | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        # A deque: a chunked body of 1-byte chunks puts thousands of chunks here between two
        # reads, and list.pop(0) would make reading them quadratic.
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._high = high_water
        self._low = low_water
        self._on_first_read = on_first_read
        # Told every byte the reader took or the body dropped (0: ``fill`` raised the high
        # water): an HTTP/2 stream gives flow-control window back only for bytes that left.
        self._on_read = on_read
        self._starved = False
        self._limit = sys.maxsize
        self.received = 0  # total bytes fed, for limits and access logs

    # -- producer side (protocol callbacks; never await) ------------------------------------
    def feed(self, chunk: bytes) -> None:
        n = len(chunk)
        self.received += n
        if self.received > self._limit:
            self._refuse()
            if self._on_read is not None:
                self._on_read(n)  # dropped, never buffered
            return
        self._chunks.append(chunk)
        self._buffered += n
        if self._buffered > self._high and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_error(self, exc: BaseException) -> None:
        if not self._eof:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- consumer side ----------------------------------------------------------------------
    @property
    def at_eof(self) -> bool:
        """True once every byte was fed and read."""
        return self._eof and not self._chunks

    @property
    def complete(self) -> bool:
        """True once the producer has seen the end of the body (read or not)."""
        return self._eof

    def read_nowait(self) -> bytes:
        """Everything buffered right now, without waiting (b"" if nothing)."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._maybe_resume()
        if self._on_read is not None:
            self._on_read(len(data))
        return data

    async def read(self) -> bytes:
        """The next chunk; b"" at the end of the body."""
        if self._on_first_read is not None:
            cb, self._on_first_read = self._on_first_read, None
            cb()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._maybe_resume()
        if self._on_read is not None:
            self._on_read(len(chunk))
        return chunk

    @property
    def buffered(self) -> int:
        """Bytes fed and not read yet."""
        return self._buffered

    def peek(self) -> bytes:
        """Everything buffered right now, left in place for the reader (a copy of a complete
        body for a mirrored request)."""
        return b"".join(self._chunks)

    async def fill(self, size: int) -> None:
        """Wait until the body is complete or ``size`` bytes of it wait unread, without reading
        them: a proxy takes a small body whole before it takes an upstream connection, so a slow
        client holds none. Raises the body's error (a timeout, a disconnect, a limit)."""
        if self._on_first_read is not None:
            cb, self._on_first_read = self._on_first_read, None
            cb()
        if size > self._high:
            # The producer must not pause short of ``size``; from here on this body may buffer
            # that much (the limit a caller chose to hold in memory).
            self._high = size
            if self._paused and self._buffered <= size:
                self._paused = False
                self._resume()
            if self._on_read is not None:
                self._on_read(0)
        while not self._eof and self._buffered < size and not self._starved:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error

    def starve(self) -> None:
        """The producer can give no more for now (an HTTP/2 connection's body budget is held
        by its streams): a ``fill`` returns with what is buffered, so the body streams on and
        frees the budget instead of waiting for bytes that cannot come."""
        self._starved = True
        self._wake()

    @property
    def starved(self) -> bool:
        """The producer said it can give no more for now (see ``starve``)."""
        return self._starved

    @property
    def high_water(self) -> int:
        """Bytes this body may buffer unread (raised by ``fill``)."""
        return self._high

    def limit_to(self, limit: int) -> None:
        """Refuse the body once more than ``limit`` bytes arrive (a route's smaller limit than the
        server's); call it before anything reads the body. Bytes past the limit are dropped, never
        buffered, and the reader gets :class:`BodyTooLarge` at once."""
        self._limit = limit
        if self.received > limit:
            self._refuse()

    def _refuse(self) -> None:
        dropped = self._buffered
        self._chunks.clear()
        self._buffered = 0
        if dropped and self._on_read is not None:
            self._on_read(dropped)
        self._maybe_resume()
        if not isinstance(self._error, BodyTooLarge):
            self._error = BodyTooLarge(self._limit)
            self._wake()

    def _maybe_resume(self) -> None:
        if self._paused and self._buffered <= self._low:
            self._paused = False
            self._resume()

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (for handlers that need it whole)."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        # A method rather than an async generator: mypyc compiles this module, and it does not
        # compile async generators.
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk


def buffered_body(data: bytes) -> BodyStream:
    """A complete body holding ``data``: a body that was read whole, to be read again."""
    b = BodyStream(_noop, _noop, max(len(data), 1), 0)
    if data:
        b.feed(data)
    b.feed_eof()
    return b


def empty_body() -> BodyStream:
    """The body of a request without one (GET, HEAD, Content-Length: 0): complete and empty.

    One shared object, made once: nothing is fed to a complete body (the server feeds only a
    body it is still parsing), and reading it, or setting an error on it, changes nothing."""
    return _EMPTY


def _noop() -> None:
    pass


def _make_empty() -> BodyStream:
    b = BodyStream(_noop, _noop, 1, 0)
    b._eof = True
    return b


_EMPTY: Final = _make_empty()
