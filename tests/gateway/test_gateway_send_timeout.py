"""A client that stops reading a proxied response must not hold the gateway forever.

Over real sockets: a service streams a large body, a client asks for it and never reads (its
receive window closes). The gateway's write waits on a full buffer; without a send timeout it
waited forever, holding the upstream connection (and its pool slot) and the buffered bytes.
"""

from __future__ import annotations

import asyncio
import socket
import time

from gateway_helpers import backend, config, gateway, read_request

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
BIG = 64 * 1024 * 1024  # far more than every socket buffer on the way together


async def _get(port: int) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /api/small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    out = await asyncio.wait_for(r.read(), 5)
    w.close()
    return out


def _stuck_client(port: int) -> socket.socket:
    """Asks for the big body and never reads it: a small receive buffer, soon a zero window."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/big HTTP/1.1\r\nHost: a\r\n\r\n")
    return s


def _rest(s: socket.socket) -> int:
    """Reads to the end; the bytes that came (what the buffers on the way held when the gateway
    gave up, or the whole body when it never did)."""
    s.settimeout(5.0)
    n = 0
    try:
        while data := s.recv(1 << 20):
            n += len(data)
    except ConnectionResetError:
        pass
    return n


async def test_a_client_that_stops_reading_is_dropped_and_the_upstream_slot_released() -> None:
    started = asyncio.Event()
    streams: list[int] = []

    async def service(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            line, _headers, _ = await read_request(r)
            if b"/big" not in line:
                w.write(OK)
                await w.drain()
                return
            streams.append(1)
            if len(streams) == 2:
                started.set()
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % BIG)
            chunk = b"x" * 65536
            for _ in range(BIG // len(chunk)):
                w.write(chunk)
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the gateway closed the connection of an abandoned response
        finally:
            w.close()

    async with backend(service) as bport:
        cfg = config(bport, pool={"max_connections": 2}, timeouts={"connect": "300ms", "total": "60s"})
        cfg["limits"] = {"send_timeout": "1s"}
        async with gateway(cfg) as (gport, _log):
            stuck = [_stuck_client(gport) for _ in range(2)]
            try:
                await asyncio.wait_for(started.wait(), 5)
                # Both pool slots are held by the stalled responses: nothing else gets through.
                assert not (await _get(gport)).startswith(b"HTTP/1.1 200")
                t0 = time.monotonic()
                # The upstream connections were closed (their bodies unread) and their slots
                # given back: the pool serves again.
                async with asyncio.timeout(5):
                    while not (await _get(gport)).startswith(b"HTTP/1.1 200"):
                        await asyncio.sleep(0.1)
                waited = time.monotonic() - t0
                # And the clients were cut off: reading now gets what was buffered, then the end.
                for s in stuck:
                    assert await asyncio.to_thread(_rest, s) < BIG // 4
            finally:
                for s in stuck:
                    s.close()
        assert waited < 4.0, waited
