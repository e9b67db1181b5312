"""In-memory stand-ins for what the engine's protocols talk to, for socket-free tests (h11's
style): a test feeds bytes with ``data_received`` and reads back exactly what the protocol wrote,
with no socket, no port and no timing in between.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from edgeway.http.limits import ServerLimits
from edgeway.http.server import Handler, ServerProtocol


class FakeTransport(asyncio.Transport):
    """Records writes, closing and reading state; never calls back into the protocol (a test
    calls ``connection_lost`` itself, where a real transport would)."""

    def __init__(self, peer: tuple[str, int] = ("203.0.113.9", 40000)) -> None:
        super().__init__()
        self.peer = peer
        self._written = bytearray()
        self.closed = False  # close(): flush, then close
        self.aborted = False  # abort(): drop the buffer, reset
        self.reading = True
        self.buffer_limits: tuple[int | None, int | None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # The protocols check is_closing() before writing; a write after close is an engine bug.
        assert not self.is_closing(), "write after close"
        self._written += data

    def take(self) -> bytes:
        """What was written since the last take()."""
        data = bytes(self._written)
        self._written.clear()
        return data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        # Pausing twice would be harmless on a real transport, but means the protocol lost track.
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.buffer_limits = (high, low)


class Observer:
    """The server-level ConnectionObserver, recording what it is told."""

    def __init__(self) -> None:
        self.opens = 0
        self.closes = 0
        self.rejections: list[tuple[int, str]] = []

    def opened(self, conn: ServerProtocol) -> None:
        self.opens += 1

    def closed(self, conn: ServerProtocol) -> None:
        self.closes += 1

    def rejected(self, conn: ServerProtocol, status: int, reason: str) -> None:
        self.rejections.append((status, reason))


class Conn:
    """One downstream connection under test: the protocol, its transport and its observer."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.observer = Observer()
        self.protocol = ServerProtocol(handler, limits or ServerLimits(), self.observer)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def send(self, data: bytes) -> bytes:
        """Feed ``data``, let the handler tasks run, and return what was written meanwhile."""
        self.feed(data)
        await settle()
        return self.transport.take()

    def lose(self) -> None:
        self.protocol.connection_lost(None)

    @property
    def rejections(self) -> list[tuple[int, str]]:
        return self.observer.rejections

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()


async def settle(rounds: int = 10) -> None:
    """Let ready tasks and callbacks run (handlers are tasks on the running loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, {self.body!r})"


class _ResponseReader:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append(Response(self.parser.get_status_code(), self._headers, self._body))


def responses(data: bytes) -> list[Response]:
    """Every complete response in ``data`` (interim 1xx responses included), parsed by llhttp."""
    reader = _ResponseReader()
    reader.parser.feed_data(data)
    return reader.done


def response(data: bytes) -> Response:
    """The one response in ``data``."""
    got = responses(data)
    assert len(got) == 1, got
    return got[0]
