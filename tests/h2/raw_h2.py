"""Attack tooling for HTTP/2 tests: a client that sends what a well-behaved one never would, and
a service that records every byte the gateway writes to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from h2_client import H2Client


async def raw_client(port: int) -> H2Client:
    """An :class:`H2Client` whose own checks of what it sends are off: header lists with
    upper-case names, CR/LF, pseudo-headers anywhere go out as given."""
    client = await H2Client.connect(port)
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False
    return client


class RecordingService:
    """An HTTP/1.1 service answering ``200 ok`` to every request head it reads; ``received``
    holds every byte of every connection the gateway opened to it, in arrival order."""

    def __init__(self) -> None:
        self.received = b""
        self.port = 0
        self.connections = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls) -> AsyncIterator[RecordingService]:
        svc = cls()
        server = await asyncio.start_server(svc._handle, "127.0.0.1", 0)
        svc.port = int(server.sockets[0].getsockname()[1])
        try:
            yield svc
        finally:
            server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                self.received += data
                # One answer per request head; good enough for requests without a body or
                # with one that arrived with its head.
                for _ in range(data.count(b"\r\n\r\n")):
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()
