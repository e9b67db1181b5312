"""The delay proxy (edgeway.demo.control.delay): what makes the patterns comparable at a chosen
client round-trip time. It must add the RTT (never less) and pass every byte intact, both ways."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from conftest import dead_port
from edgeway.demo.control.delay import DelayProxy


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """Echoes every byte back; answers EOF with EOF after echoing what came."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> float:
    started = time.perf_counter()
    writer.write(payload)
    await writer.drain()
    assert await reader.readexactly(len(payload)) == payload
    return time.perf_counter() - started


async def test_each_exchange_costs_at_least_the_rtt_and_a_new_connection_one_more() -> None:
    async with echo_server() as port, DelayProxy("127.0.0.1", port, rtt_ms=120) as proxy:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        first = await round_trip(reader, writer, b"ping")
        connected_and_first = time.perf_counter() - started
        second = await round_trip(reader, writer, b"pong")
        writer.close()
    # The delay is a sleep: it can be longer on a busy machine, never shorter.
    assert connected_and_first >= 0.240  # the handshake's round trip, then the exchange's
    assert first >= 0.240
    assert second >= 0.120


async def test_the_rtt_can_change_while_a_connection_is_open() -> None:
    async with echo_server() as port, DelayProxy("127.0.0.1", port, rtt_ms=0) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await round_trip(reader, writer, b"warm")
        proxy.rtt_ms = 150
        assert await round_trip(reader, writer, b"slow") >= 0.150
        writer.close()


async def test_bytes_pass_intact_both_ways_with_half_close() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # more than the chunks it may hold at once
    async with echo_server() as port, DelayProxy("127.0.0.1", port, rtt_ms=10, queue_chunks=4) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

        async def send() -> None:
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i : i + 100_000])
                await writer.drain()
            writer.write_eof()  # the proxy passes the half-close on; the echo then ends too

        sender = asyncio.create_task(send())
        echoed = await asyncio.wait_for(reader.read(), 30)  # to EOF
        await sender
        writer.close()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert len(echoed) == len(payload)


async def test_connections_beyond_the_bound_are_closed_and_counted() -> None:
    async with echo_server() as port, DelayProxy("127.0.0.1", port, max_connections=2) as proxy:
        held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(2)]
        for r, w in held:
            await round_trip(r, w, b"x")  # both accepted and serving
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        assert proxy.refused == 1
        assert proxy.open_connections == 2
        for _, w in held:
            w.close()
        writer.close()


async def test_an_unreachable_target_closes_the_client_connection() -> None:
    async with DelayProxy("127.0.0.1", dead_port()) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


def test_a_negative_rtt_is_refused() -> None:
    with pytest.raises(ValueError, match="rtt_ms must be >= 0"):
        DelayProxy("127.0.0.1", 1, rtt_ms=-1)
    proxy = DelayProxy("127.0.0.1", 1)
    with pytest.raises(ValueError, match="rtt_ms"):
        proxy.rtt_ms = -5
