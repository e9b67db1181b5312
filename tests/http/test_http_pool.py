"""The upstream connection pool against a real listening socket."""

from __future__ import annotations

import asyncio

import pytest

from conftest import dead_port
from edgeway.http.errors import PoolTimeout, UpstreamConnectError
from edgeway.http.limits import PoolLimits
from edgeway.http.pool import ConnectionPool
from edgeway.http.upstream import UpstreamState


async def _server() -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    conns: list[asyncio.StreamWriter] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)
        while await r.read(65536):
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    # asyncio's default backlog (100) would drop the SYNs of a burst of connects.
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=1024)
    return srv, srv.sockets[0].getsockname()[1], conns


async def _exchange(pool: ConnectionPool) -> bool:
    conn, reused = await pool.acquire(1.0)
    conn.begin(head_request=False)
    conn.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.request_sent = True
    head = await conn.read_head()
    assert head.status == 200
    assert await conn.body.read() == b"ok"
    assert await conn.body.read() == b""
    pool.release(conn)
    return reused


async def test_clean_connections_are_reused_and_expire_when_idle() -> None:
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(idle_timeout=0.5))
    assert await _exchange(pool) is False
    assert await _exchange(pool) is True
    assert pool.idle_connections == 1
    await asyncio.sleep(1.2)
    assert pool.idle_connections == 0
    assert pool.open_connections == 0
    pool.close()
    srv.close()


async def test_pool_limit_makes_requests_wait_then_503() -> None:
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(max_connections=1))
    held, _ = await pool.acquire(1.0)
    with pytest.raises(PoolTimeout):
        await pool.acquire(0.2)
    waiter = asyncio.create_task(pool.acquire(2.0))
    await asyncio.sleep(0.05)
    held.begin(head_request=False)
    held.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    held.request_sent = True
    await held.read_head()
    await held.body.read()
    await held.body.read()
    pool.release(held)
    handed, reused = await waiter
    assert handed is held
    assert reused
    pool.close()
    srv.close()


async def test_connection_with_unread_body_is_not_reused() -> None:
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits())
    conn, _ = await pool.acquire(1.0)
    conn.begin(head_request=False)
    conn.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.request_sent = True
    await conn.read_head()
    conn.body._eof = False  # pretend the body was not read to its end
    conn.response_complete = False
    pool.release(conn)
    assert pool.idle_connections == 0
    await asyncio.sleep(0.05)
    assert conn.state is UpstreamState.CLOSED
    pool.close()
    srv.close()


async def test_refused_connection_maps_to_upstream_connect_error() -> None:
    port = dead_port()  # held bound, never listening: refused for the whole test
    pool = ConnectionPool("127.0.0.1", port, PoolLimits())
    with pytest.raises(UpstreamConnectError):
        await pool.acquire(1.0)
    assert pool.open_connections == 0


async def test_a_connection_leaves_the_pool_exactly_once() -> None:
    """Detached for a tunnel, then released (or lost) as well: one slot back, not two."""
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(max_connections=1))
    conn, _ = await pool.acquire(1.0)
    pool.detach(conn)
    assert pool.open_connections == 0
    pool.release(conn)
    pool.detach(conn)
    assert pool.open_connections == 0
    await asyncio.sleep(0.05)
    assert conn.state is UpstreamState.CLOSED
    other, reused = await pool.acquire(0.5)  # the slot is free: no PoolTimeout
    assert not reused
    assert pool.open_connections == 1
    pool.release(other)
    pool.close()
    srv.close()


async def test_without_a_cap_every_concurrent_request_opens_a_connection() -> None:
    """The default pool has no cap: 300 exchanges at once get 300 connections at once (a cap of
    256 made the rest wait, bounding throughput at cap / latency)."""
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits())
    # A generous connect timeout: 300 connects at once on a loaded machine can take over a second.
    held = await asyncio.gather(*(pool.acquire(10.0) for _ in range(300)))
    assert pool.open_connections == 300
    assert all(not reused for _, reused in held)
    for conn, _ in held:
        conn.close()
    pool.close()
    srv.close()


@pytest.mark.parametrize("clean", [True, False], ids=["handed-connection", "handed-slot"])
async def test_a_waiter_cancelled_as_it_is_handed_a_connection_gives_it_back(clean: bool) -> None:
    """The holder releases and the waiting request is cancelled (its client left) in the same
    turn of the loop: the connection, or the slot reserved for it, must not be lost."""
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(max_connections=1))
    held, _ = await pool.acquire(1.0)
    held.begin(head_request=False)
    held.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    held.request_sent = True
    await held.read_head()
    assert await held.body.read() == b"ok"
    await held.body.read()
    if not clean:
        held.response_complete = False  # not reusable: closed, and its slot handed on
    waiter = asyncio.create_task(pool.acquire(2.0))
    await asyncio.sleep(0.01)
    pool.release(held)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()
    assert pool.open_connections == 0
    conn, _ = await pool.acquire(0.5)  # before: PoolTimeout, the only slot was gone
    pool.release(conn)
    pool.close()
    srv.close()


async def test_released_connections_beyond_max_idle_are_closed() -> None:
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(max_idle=2))
    held = [conn for conn, _ in await asyncio.gather(*(pool.acquire(1.0) for _ in range(5)))]
    for conn in held:
        conn.begin(head_request=False)
        conn.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        conn.request_sent = True
        await conn.read_head()
        assert await conn.body.read() == b"ok"
        assert await conn.body.read() == b""
    for conn in held:
        pool.release(conn)
    assert (pool.idle_connections, pool.open_connections) == (2, 2)
    await asyncio.sleep(0.05)
    assert [conn.state for conn in held] == [UpstreamState.IDLE] * 2 + [UpstreamState.CLOSED] * 3
    assert await _exchange(pool) is True  # the kept ones are reused
    pool.close()
    srv.close()


async def test_with_a_cap_waiting_requests_are_served_in_arrival_order() -> None:
    srv, port, _ = await _server()
    pool = ConnectionPool("127.0.0.1", port, PoolLimits(max_connections=1))
    held, _ = await pool.acquire(1.0)
    served: list[int] = []

    async def wait_turn(i: int) -> None:
        conn, _ = await pool.acquire(5.0)
        served.append(i)
        conn.close()  # not reusable: frees the slot for the next waiter
        pool.release(conn)

    waiters = []
    for i in range(5):
        waiters.append(asyncio.create_task(wait_turn(i)))
        await asyncio.sleep(0.01)  # arrival order is the creation order
    held.close()
    pool.release(held)
    await asyncio.gather(*waiters)
    assert served == [0, 1, 2, 3, 4]
    assert pool.open_connections == 0
    pool.close()
    srv.close()
