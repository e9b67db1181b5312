"""The upstream side of the engine without a socket: response bytes go in through
``data_received``; the test checks the head, the body, and whether the connection may be reused.
A tunnel between two fake transports covers the WebSocket byte relay."""

from __future__ import annotations

import asyncio

import pytest
from fakes import Conn, FakeTransport, settle

from edgeway.http.errors import UpstreamProtocolError, UpstreamReset, UpstreamTimeout
from edgeway.http.exchange import Exchange
from edgeway.http.limits import PoolLimits
from edgeway.http.tunnel import Tunnel
from edgeway.http.upstream import DeadlineWatch, UpstreamConnection, UpstreamState

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Upstream:
    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.idle_lost: list[UpstreamConnection] = []
        self.deadlines = DeadlineWatch()
        self.conn = UpstreamConnection(
            "svc:80", limits or PoolLimits(), self.idle_lost.append, self.deadlines
        )
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)

    def exchange(self, request: bytes = b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n", head: bool = False) -> None:
        self.conn.begin(head)
        self.conn.write(request)
        self.conn.request_sent = True


async def test_a_response_read_to_its_end_leaves_a_reusable_connection() -> None:
    up = Upstream()
    assert up.conn.state is UpstreamState.BUSY
    up.exchange()
    assert up.transport.take() == b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"
    for i in range(len(OK)):
        up.conn.data_received(OK[i : i + 1])
    head = await up.conn.read_head()
    assert (head.status, head.content_length, head.chunked, head.keep_alive) == (200, 5, False, True)
    assert "200" in repr(head)
    assert await up.conn.body.read_all(100) == b"hello"
    assert up.conn.response_complete
    assert up.conn.is_reusable
    up.conn.mark_idle()
    assert up.conn.state.is_idle
    # The next exchange reuses the parser and the connection.
    up.exchange()
    up.conn.data_received(OK)
    assert (await up.conn.read_head()).status == 200
    assert up.conn.exchanges == 2
    assert "svc:80" in repr(up.conn)


async def test_bytes_arriving_while_idle_close_the_connection() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(OK)
    up.conn.mark_idle()
    up.conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert up.transport.closed
    up.conn.connection_lost(None)
    assert up.idle_lost == [up.conn]


async def test_a_chunked_response_drops_its_trailers() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    head = await up.conn.read_head()
    assert head.chunked
    assert await up.conn.body.read_all(100) == b"abc"
    assert [n.lower() for n, _ in head.headers] == [b"transfer-encoding"]
    assert up.conn.is_reusable


async def test_an_interim_response_is_skipped() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK)
    head = await up.conn.read_head()
    assert head.status == 200
    assert await up.conn.body.read_all(100) == b"hello"


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_complete_at_the_head(status: int) -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert up.conn.response_complete
    assert up.conn.is_reusable


async def test_a_head_response_ends_at_its_head_and_a_body_behind_it_is_dropped() -> None:
    up = Upstream()
    up.exchange(b"HEAD / HTTP/1.1\r\nHost: svc\r\n\r\n", head=True)
    up.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert up.conn.response_complete
    assert await up.conn.body.read_all(100) == b""
    up.conn.data_received(b"hello")  # a service that answers HEAD with a body
    assert up.transport.closed
    assert not up.conn.is_reusable


async def test_a_second_response_in_the_same_read_keeps_the_first_and_drops_the_connection() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad")
    assert await up.conn.body.read_all(100) == b"hello"
    assert up.transport.aborted
    assert not up.conn.is_reusable


async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    head = await up.conn.read_head()
    assert not head.keep_alive
    up.conn.connection_lost(None)
    assert await up.conn.body.read_all(100) == b"all of it"
    assert up.conn.response_complete


async def test_connection_close_from_the_service_is_not_reusable() -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert up.conn.response_complete
    assert not up.conn.is_reusable


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"NOT HTTP\r\n\r\n", "invalid response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "other than chunked"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "without being asked"),
    ],
)
async def test_an_invalid_response_fails_the_exchange(data: bytes, message: str) -> None:
    up = Upstream()
    up.exchange()
    up.conn.data_received(data)
    with pytest.raises(UpstreamProtocolError, match=message):
        await up.conn.read_head()
    assert up.transport.closed


ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (b"Upgrade: h2c\r\nConnection: upgrade\r\nSec-WebSocket-Accept: " + ACCEPT, "to 'h2c'"),
        (b"Upgrade: websocket\r\nSec-WebSocket-Accept: " + ACCEPT, "without 'Connection: upgrade'"),
        (b"Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: x", "does not answer the key"),
    ],
)
async def test_a_101_must_answer_the_upgrade_that_was_asked_for(headers: bytes, message: str) -> None:
    up = Upstream()
    up.exchange()
    up.conn.expect_upgrade(b"websocket", ACCEPT)
    up.conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\n" + headers + b"\r\n\r\n")
    with pytest.raises(UpstreamProtocolError, match=message):
        await up.conn.read_head()


async def test_a_service_that_closes_mid_exchange_fails_it_with_a_reset() -> None:
    up = Upstream()
    up.exchange()
    up.transport.close()  # the socket is gone before asyncio reports it
    up.conn.connection_lost(None)
    with pytest.raises(UpstreamReset):
        await up.conn.read_head()
    with pytest.raises(UpstreamReset):
        up.conn.write(b"more")
    with pytest.raises(UpstreamReset):
        await up.conn.drain()

    up = Upstream()
    up.exchange()
    up.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    up.conn.connection_lost(None)
    with pytest.raises(UpstreamReset):
        await up.conn.body.read_all(100)


async def test_reading_pauses_while_the_body_waits_and_resumes_as_it_is_read() -> None:
    up = Upstream(PoolLimits(read_high_water=4, read_low_water=0))
    up.exchange()
    up.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    assert not up.transport.reading
    assert await up.conn.body.read() == b"0123456789"
    assert up.transport.reading


async def test_drain_waits_while_the_service_is_not_reading() -> None:
    up = Upstream()
    up.conn.pause_writing()
    drained = asyncio.ensure_future(up.conn.drain())
    await settle()
    assert not drained.done()
    up.conn.resume_writing()
    await drained


class Follower:
    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.failures: list[Exception] = []

    def upstream_data(self, conn: UpstreamConnection) -> None:
        self.seen.append(conn.response_complete)

    def upstream_failed(self, exc: Exception) -> None:
        self.failures.append(exc)


async def test_a_listener_follows_the_exchange_by_callbacks() -> None:
    up = Upstream()
    follower = Follower()
    up.conn.begin(False, follower)
    up.conn.data_received(OK[:20])
    up.conn.data_received(OK[20:])
    assert follower.seen == [False, True]
    assert up.conn.head is not None
    assert up.conn.body.read_nowait() == b"hello"

    up.conn.mark_idle()
    follower = Follower()
    up.conn.begin(False, follower)
    up.conn.data_received(b"garbage\r\n\r\n")
    assert len(follower.failures) == 1
    assert isinstance(follower.failures[0], UpstreamProtocolError)
    assert up.conn.listener is None


async def test_an_expired_deadline_fails_the_exchange_with_its_phase() -> None:
    up = Upstream()
    up.exchange()
    loop = asyncio.get_running_loop()
    up.conn.set_deadline(loop.time() - 1, "first_byte", 2.5)
    up.deadlines._tick()  # what the watch's timer runs
    with pytest.raises(UpstreamTimeout, match=r"first_byte timeout after 2\.5s") as caught:
        await up.conn.read_head()
    assert caught.value.phase == "first_byte"
    assert up.transport.aborted
    up.deadlines.close()


async def test_a_cleared_deadline_never_fires_and_unanswered_exchanges_fail_at_once() -> None:
    up = Upstream()
    up.exchange()
    loop = asyncio.get_running_loop()
    up.conn.set_deadline(loop.time() + 60, "total", 60)
    up.deadlines._tick()
    assert not up.conn.head_waiter().done()
    up.deadlines.fail_unanswered(lambda: UpstreamReset("instance down"))
    with pytest.raises(UpstreamReset, match="instance down"):
        await up.conn.read_head()
    other = Upstream()
    other.exchange()
    other.conn.set_deadline(loop.time() + 60, "total", 60)
    other.conn.clear_deadline()
    other.deadlines._tick()
    other.deadlines.close()
    assert not other.conn.head_waiter().done()


# -- tunnel ------------------------------------------------------------------------------------
async def test_a_tunnel_relays_bytes_both_ways_with_flow_control_and_closes_both_ends() -> None:
    tunnels: list[Tunnel] = []
    up = Upstream()
    up.exchange()
    up.conn.expect_upgrade(b"websocket", ACCEPT)

    async def upgrades(ex: Exchange) -> None:
        up.conn.data_received(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\nFROM-SERVICE"
        )
        head = await up.conn.read_head()
        assert head.upgraded
        tunnel = ex.switch_to_tunnel(
            [(b"upgrade", b"websocket"), (b"connection", b"upgrade")], up.conn, idle_timeout=30.0
        )
        tunnels.append(tunnel)

    c = Conn(upgrades)
    out = await c.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nFROM-CLIENT"
    )
    (tunnel,) = tunnels
    assert out.endswith(b"\r\n\r\nFROM-SERVICE")
    assert up.transport.take().endswith(b"FROM-CLIENT")
    c.feed(b"up")
    up.conn.data_received(b"down")
    assert (up.transport.take(), c.transport.take()) == (b"up", b"down")
    assert (tunnel.bytes_up, tunnel.bytes_down) == (len(b"FROM-CLIENTup"), len(b"FROM-SERVICEdown"))
    # A client that stops reading stops the service's side, and the other way round.
    c.protocol.pause_writing()
    assert not up.transport.reading
    c.protocol.resume_writing()
    assert up.transport.reading
    up.conn.pause_writing()
    assert not c.transport.reading
    up.conn.resume_writing()
    assert c.transport.reading
    # Activity keeps it open; silence for the idle timeout closes both ends.
    tunnel._check_idle()
    assert not tunnel.closed.done()
    tunnel._last -= 31.0
    tunnel._check_idle()
    assert tunnel.closed.done()
    assert up.transport.closed
    assert c.transport.closed


@pytest.mark.parametrize("side", ["client", "service"])
async def test_a_tunnel_ends_when_either_side_goes(side: str) -> None:
    up = Upstream()
    up.exchange()
    up.conn.expect_upgrade(b"websocket", ACCEPT)
    up.conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
    )
    tunnels: list[Tunnel] = []

    async def upgrades(ex: Exchange) -> None:
        tunnel = ex.switch_to_tunnel([], up.conn, idle_timeout=30.0)
        tunnels.append(tunnel)

    c = Conn(upgrades)
    await c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    if side == "client":
        c.lose()
        assert up.transport.closed
    else:
        up.conn.connection_lost(None)
        assert c.transport.closed
    assert tunnels[0].closed.done()
