"""Helpers for engine tests: start a Listener with a handler, talk raw HTTP to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener, bind_socket
from edgeway.http.server import Handler


@contextlib.asynccontextmanager
async def serving(handler: Handler, limits: ServerLimits | None = None) -> AsyncIterator[Listener]:
    listener = Listener(handler, limits or ServerLimits())
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener
    finally:
        await listener.shutdown(1.0)


async def echo(ex: Exchange) -> None:
    body = await ex.body.read_all(1 << 26)
    ex.respond(200, [(b"x-path", ex.path)], body or ex.method + b" " + ex.target)


async def closed_after(port: int, data: bytes, wait: float = 2.0) -> tuple[bytes, bool]:
    """Send bytes; return what came back and whether the server closed the connection."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    out = b""
    closed = False
    try:
        async with asyncio.timeout(wait):
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
    except TimeoutError:
        pass
    w.close()
    return out, closed
