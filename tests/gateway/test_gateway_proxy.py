"""The proxy action end to end over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource

import pytest
from gateway_helpers import backend, config, gateway, read_request

from conftest import dead_port, raw_http

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_hop_by_hop_headers_removed_and_forwarding_headers_set() -> None:
    seen: list[dict[bytes, bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line, headers, _ = await read_request(r)
        seen.append({b"line": line, **headers})
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Internal\r\n"
            b"X-Internal: secret\r\nKeep-Alive: timeout=5\r\n\r\nok"
        )
        await w.drain()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, log):
        out = await raw_http(
            gport,
            b"GET /api/items?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Drop\r\n"
            b"X-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Request-ID: client-id-1\r\nX-Keep: yes\r\n\r\n",
        )
    h = seen[0]
    assert h[b"line"] == b"GET /items?q=1 HTTP/1.1"
    for gone in (b"x-drop", b"keep-alive", b"te", b"proxy-authorization", b"connection"):
        assert gone not in h, gone
    assert h[b"x-keep"] == b"yes"
    # The client is no trusted proxy: its X-Forwarded-For is replaced (forwarding.py).
    assert h[b"x-forwarded-for"] == b"127.0.0.1"
    assert h[b"x-forwarded-host"] == b"shop.example"
    assert h[b"x-forwarded-proto"] == b"http"
    assert h[b"via"] == b"1.1 edgeway"
    assert h[b"x-request-id"] == b"client-id-1"
    assert h[b"traceparent"].startswith(b"00-")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"x-internal" not in out.lower()
    assert b"keep-alive: timeout" not in out.lower()
    assert b"x-request-id: client-id-1" in out
    line = json.loads(log.getvalue().splitlines()[-1])
    assert line["request_id"] == "client-id-1"
    assert line["route"] == "api"
    assert line["status"] == 200
    assert line["upstream"] == f"127.0.0.1:{line['upstream'].split(':')[1]}"


async def test_malformed_request_id_is_replaced_and_traceparent_continued() -> None:
    seen: list[dict[bytes, bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append((await read_request(r))[1])
        w.write(OK)
        await w.drain()

    trace = b"0af7651916cd43dd8448eb211c80319c"
    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(
            gport,
            b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Request-ID: {bad json}\r\n"
            b"traceparent: 00-" + trace + b"-b7ad6b7169203331-01\r\n\r\n",
        )
    rid = seen[0][b"x-request-id"]
    assert rid != b"{bad json}"
    assert len(rid) == 32
    tp = seen[0][b"traceparent"]
    assert tp.split(b"-")[1] == trace
    assert tp.split(b"-")[2] != b"b7ad6b7169203331"
    assert b"x-request-id: " + rid in out


async def test_upstream_connections_are_pooled_and_reused() -> None:
    connections = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await read_request(r)
                w.write(OK)
                await w.drain()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        for _ in range(10):
            w.write(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await r.readexactly(2)
        w.close()
    assert connections == 1


async def test_large_body_streams_both_ways_with_flat_memory() -> None:
    """200 MB up and back through the gateway; the gateway never holds the body."""
    size = 200 * 1024 * 1024
    received = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        head = await r.readuntil(b"\r\n\r\n")
        assert b"content-length: %d" % size in head.lower()
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        left = size
        while left:
            chunk = await r.read(min(left, 1 << 20))
            left -= len(chunk)
            received += len(chunk)
            w.write(chunk)  # echo back as it arrives
            await w.drain()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with (
        backend(handler) as bport,
        gateway({**config(bport), "limits": {"max_body_bytes": None}}) as (gport, _),
    ):
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * (1 << 20)

        async def send() -> None:
            for _ in range(size // len(block)):
                w.write(block)
                await w.drain()

        sender = asyncio.create_task(send())
        await r.readuntil(b"\r\n\r\n")
        got = 0
        while got < size:
            got += len(await r.read(1 << 20))
        await sender
        w.close()
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert received == size
    assert got == size
    assert growth_mb < 60, f"max RSS grew by {growth_mb:.0f} MB while streaming 200 MB"


async def test_upstream_refused_is_502_with_problem_body() -> None:
    port = dead_port()  # held bound, never listening: refused for the whole test
    async with gateway(config(port)) as (gport, _):
        out = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502")
    assert b"application/problem+json" in out
    assert b"cannot connect" in out


async def test_upstream_first_byte_timeout_is_504() -> None:
    async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with backend(hang) as bport, gateway(config(bport, timeouts={"first_byte": "200ms"})) as (gport, _):
        out = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 504")
    assert b"first_byte" in out


async def test_upstream_total_timeout_cuts_a_stalled_body_and_closes_the_client() -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart")
        await w.drain()
        await asyncio.sleep(5)

    async with (
        backend(stall) as bport,
        gateway(config(bport, timeouts={"connect": "200ms", "first_byte": "200ms", "total": "400ms"})) as (
            gport,
            _,
        ),
    ):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", wait=4)
        elapsed = loop.time() - t0
    assert out.startswith(b"HTTP/1.1 200")
    assert out.endswith(b"start")
    assert elapsed < 2.0  # closed by the total timeout, not by the test's wait


async def test_upstream_reset_mid_body_closes_the_client_connection() -> None:
    async def partial(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-part")
        await w.drain()
        w.transport.abort()

    async with backend(partial) as bport, gateway(config(bport)) as (gport, _):
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        async with asyncio.timeout(3):
            while chunk := await r.read(65536):
                data += chunk
        w.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"only-part")  # truncated, then closed: never padded or reused


async def test_stale_pooled_connection_is_retried_once_for_get() -> None:
    served = 0

    async def one_shot(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(r)
        served += 1
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        await asyncio.sleep(0.05)
        w.close()  # closes the kept-alive connection behind the gateway's back

    async with backend(one_shot) as bport, gateway(config(bport)) as (gport, _):
        first = await raw_http(gport, b"GET /api/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.2)
        second = await raw_http(gport, b"GET /api/b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200")
    assert served == 2


@pytest.mark.parametrize("path", [b"/api/../admin", b"/api/%2e%2e/admin", b"//api/../admin"])
async def test_dot_segments_cannot_escape_a_route(path: bytes) -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append((await read_request(r))[0])
        w.write(OK)
        await w.drain()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404")
    assert seen == []


async def test_websocket_is_tunnelled_to_the_upstream() -> None:
    import websockets

    async def echo(ws: websockets.ServerConnection) -> None:
        async for msg in ws:
            await ws.send(f"echo:{msg!s}")

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        bport = next(iter(server.sockets)).getsockname()[1]
        async with (
            gateway(config(bport)) as (gport, _),
            websockets.connect(f"ws://127.0.0.1:{gport}/ws") as ws,
        ):
            for i in range(3):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"echo:m{i}"


async def test_websocket_upgrade_refused_on_a_route_without_websocket() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        _, headers, _ = await read_request(r)
        assert b"upgrade" not in headers
        w.write(OK)
        await w.drain()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(
            gport,
            b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
    assert out.startswith(b"HTTP/1.1 200")
