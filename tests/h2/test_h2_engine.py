"""The engine's HTTP/2 side with a handler of its own: response trailers, streamed bodies both
ways, a graceful shutdown's GOAWAY."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from h2_attack import Attacker, headers_frame, request_block
from h2_client import H2Client
from hyperframe.frame import DataFrame, GoAwayFrame

from edgeway.http.exchange import Exchange
from edgeway.http.limits import Http2Limits, ServerLimits
from edgeway.http.listener import Listener, bind_socket


async def handler(ex: Exchange) -> None:
    if ex.path == b"/trailers":
        ex.start(200, [(b"content-type", b"application/grpc")])
        ex.write(b"one")
        await ex.drain()
        ex.finish(b"two", trailers=[(b"grpc-status", b"0"), (b"Grpc-Message", b"ok")])
    elif ex.path == b"/echo":
        received = 0
        ex.start(200, [(b"content-type", b"application/octet-stream")])
        async for chunk in ex.body:
            received += len(chunk)
            ex.write(chunk)
            await ex.drain()
        ex.finish()
        ex.log["received"] = received
    elif ex.path == b"/read":
        body = await ex.body.read_all(1 << 20)
        ex.respond(200, [], b"read %d" % len(body))
    elif ex.path == b"/slow":
        await asyncio.sleep(0.5)
        ex.respond(200, [], b"slow done")
    else:
        ex.respond(200, [(b"X-Version", ex.http_version)], b"ok")


@contextlib.asynccontextmanager
async def listening(limits: ServerLimits | None = None) -> AsyncIterator[Listener]:
    listener = Listener(handler, limits or ServerLimits(), http2=Http2Limits())
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener
    finally:
        await listener.shutdown(2.0)


async def test_trailers_end_an_http2_response() -> None:
    async with listening() as listener:
        client = await H2Client.connect(listener.port)
        try:
            reply = await client.request("GET", "/trailers")
        finally:
            await client.close()
    assert reply.status == 200
    assert reply.body == b"onetwo"
    assert reply.trailers == {"grpc-status": "0", "grpc-message": "ok"}  # names lower-cased


async def test_trailers_end_a_chunked_http_1_1_response() -> None:
    async with listening() as listener:
        r, w = await asyncio.open_connection("127.0.0.1", listener.port)
        w.write(b"GET /trailers HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"grpc-status" not in data:
            data += await asyncio.wait_for(r.read(4096), 5)
        w.close()
    assert b"transfer-encoding: chunked" in data
    assert data.endswith(b"0\r\ngrpc-status: 0\r\nGrpc-Message: ok\r\n\r\n")


async def test_a_large_body_streams_both_ways_under_flow_control() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: 16 stream windows
    async with listening() as listener:
        client = await H2Client.connect(listener.port)
        try:
            reply = await client.request("POST", "/echo", body=payload, timeout=20)
        finally:
            await client.close()
    assert reply.status == 200
    assert reply.body == payload


async def test_http_1_1_on_the_same_listener_is_unchanged() -> None:
    async with listening() as listener:
        client = await H2Client.connect(listener.port)
        r, w = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            w.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            reply = await client.request("GET", "/")
        finally:
            w.close()
            await client.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX-Version: 1.1\r\n")
    assert reply.headers["x-version"] == "2"


async def test_graceful_shutdown_sends_goaway_and_finishes_the_streams_in_flight() -> None:
    listener = Listener(handler, ServerLimits(), http2=Http2Limits())
    await listener.start(bind_socket("127.0.0.1", 0))
    # Raw frames: the h2 library, as a client, drops a connection's frames after its GOAWAY.
    peer = await Attacker.connect(listener.port)
    await peer.send(headers_frame(1, request_block("/slow"), "END_HEADERS", "END_STREAM"))
    await asyncio.sleep(0.1)
    forced = await listener.shutdown(5.0)
    frames = await peer.read_until_closed(5)
    peer.close()
    assert forced == 0
    kinds = [type(f).__name__ for f in frames]
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert (goaway.error_code, goaway.last_stream_id) == (0, 1)
    data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == 1]
    assert b"".join(f.data for f in data) == b"slow done"
    assert "END_STREAM" in data[-1].flags
    assert kinds.index("GoAwayFrame") < kinds.index("DataFrame")  # GOAWAY first, then the answer


async def test_a_request_body_that_stops_coming_gets_408_and_the_connection_goes_on() -> None:
    async with listening(ServerLimits(body_read_timeout=0.3)) as listener:
        client = await H2Client.connect(listener.port)
        try:
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                stream, [(":method", "POST"), (":scheme", "http"), (":path", "/read"), (":authority", "a")]
            )
            client.conn.send_data(stream, b"part")  # and never the rest
            client.done[stream] = asyncio.get_running_loop().create_future()
            client.flush()
            stalled = await client.response(stream, timeout=5)
            after = await client.request("POST", "/read", body=b"whole")
        finally:
            await client.close()
    assert stalled.status == 408
    assert after.body == b"read 5"
