"""Keepalive PINGs of the HTTP/2 upstream connections, against a real HTTP/2 peer that stops
answering: its in-flight streams fail long before any call timeout, and the next call opens a
new connection; a peer that answers keeps its connection."""

from __future__ import annotations

import asyncio
import time

import pytest
from h2_peer import h2_peer

from edgeway.gateway.config import validate_config
from edgeway.http.h2_pool import H2Pool
from edgeway.http.h2_upstream import H2ConnectionDead, StreamReset


def request(path: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"peer"), (b":path", path.encode())]


async def test_a_peer_that_stops_answering_fails_its_streams_and_the_next_call_reconnects() -> None:
    async with h2_peer() as peer:
        pool = H2Pool("127.0.0.1", peer.port, ping_interval=0.2, ping_timeout=0.3)
        try:
            stream = await pool.open_stream(request("/hang"), 1.0, end_stream=True)
            conn = pool.connections[0]
            peer.connections[0].freeze()
            started = time.monotonic()
            with pytest.raises(H2ConnectionDead, match=r"did not answer a PING within 0\.3s"):
                await asyncio.wait_for(stream.response(), 5.0)
            # Silent for the interval, then unanswered for the timeout (and a loop tick).
            assert time.monotonic() - started < 1.5
            assert isinstance(stream.error, StreamReset)  # what the proxies map to 502 / UNAVAILABLE
            assert conn.closed.done()
            assert conn not in pool.connections
            again = await pool.open_stream(request("/ok"), 1.0, end_stream=True)
            assert dict(await again.response())[b":status"] == b"200"
            assert pool.connections[0] is not conn
            assert len(peer.connections) == 2
        finally:
            pool.close()


async def test_an_idle_connection_that_answers_its_pings_stays() -> None:
    async with h2_peer() as peer:
        pool = H2Pool("127.0.0.1", peer.port, ping_interval=0.1, ping_timeout=0.2)
        try:
            first = await pool.open_stream(request("/ok"), 1.0, end_stream=True)
            await first.response()
            conn = pool.connections[0]
            await asyncio.sleep(0.8)
            assert peer.pings >= 3  # pinged each time it had been silent for the interval
            assert not conn.closed.done()
            second = await pool.open_stream(request("/ok"), 1.0, end_stream=True)
            assert dict(await second.response())[b":status"] == b"200"
            assert pool.connections == [conn]
            assert len(peer.connections) == 1
        finally:
            pool.close()


async def test_without_an_interval_no_ping_is_sent() -> None:
    async with h2_peer() as peer:
        pool = H2Pool("127.0.0.1", peer.port)
        try:
            stream = await pool.open_stream(request("/ok"), 1.0, end_stream=True)
            await stream.response()
            await asyncio.sleep(0.3)
            assert peer.pings == 0
        finally:
            pool.close()


def test_keepalive_needs_an_http2_service() -> None:
    def config(protocol: str) -> dict[str, object]:
        return {
            "services": {
                "s": {
                    "instances": ["http://127.0.0.1:1"],
                    "protocol": protocol,
                    "keepalive": {"interval": "30s", "timeout": "5s"},
                }
            },
            "routes": [{"match": {"path": "/**"}, "proxy": {"service": "s"}}],
        }

    validate_config(config("h2"))
    with pytest.raises(Exception, match="needs `protocol: h2`"):
        validate_config(config("http1"))
