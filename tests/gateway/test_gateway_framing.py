"""Message framing at the gateway's two edges, over real sockets: trailers, transfer codings and
slow request bodies (what a client or a service controls byte by byte)."""

from __future__ import annotations

import asyncio
import gc

import pytest
from gateway_helpers import backend, config, gateway, read_request

from conftest import raw_http

CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n"
    b"trailer: set-cookie\r\n\r\n"
    b"5\r\nhello\r\n0\r\nSet-Cookie: session=attacker\r\nLocation: https://evil.example/\r\n\r\n"
)


@pytest.mark.parametrize("split", [False, True], ids=["one read", "trailers in a later read"])
async def test_response_trailers_never_become_response_headers(split: bool) -> None:
    """One read takes the callback path (the head and the trailers are parsed before the answer is
    written), two reads the streaming path: neither may turn a trailer into a header."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        if split:
            head, _, rest = CHUNKED_WITH_TRAILERS.partition(b"0\r\n")
            w.write(head)
            await w.drain()
            await asyncio.sleep(0.1)
            w.write(b"0\r\n" + rest)
        else:
            w.write(CHUNKED_WITH_TRAILERS)
        await w.drain()
        await asyncio.sleep(0.5)
        w.close()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    assert b"set-cookie" not in head.lower()
    assert b"location" not in head.lower()
    assert b"hello" in body
    assert b"attacker" not in body


@pytest.mark.parametrize(
    "transfer_encoding",
    [b"gzip, chunked", b"gzip"],
    ids=["gzip then chunked", "gzip, delimited by close"],
)
async def test_a_response_transfer_coding_besides_chunked_is_a_502(transfer_encoding: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: %b\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % transfer_encoding)
        await w.drain()
        w.close()

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502"), out
    assert b"application/problem+json" in out
    assert b"transfer coding" in out


# -- slow request bodies -------------------------------------------------------------------


def _counting_backend(counter: dict[str, int]) -> object:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        counter["connections"] += 1
        try:
            while True:
                _line, _headers, body = await read_request(r)
                counter["requests"] += 1
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    return handler


async def test_slow_uploads_hold_no_upstream_connection_and_others_are_served() -> None:
    """Uploads that trickle in are read whole before an upstream connection is taken, so a pool
    of two connections still serves everyone else (they used to wait for a free connection and
    get 503 once the connect timeout passed)."""
    counter = {"connections": 0, "requests": 0}
    cfg = config(0, pool={"max_connections": 2}, timeouts={"connect": "300ms"})
    async with backend(_counting_backend(counter)) as bport:  # type: ignore[arg-type]
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, _):
            uploads = []
            for _ in range(10):
                r, w = await asyncio.open_connection("127.0.0.1", gport)
                w.write(b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
                uploads.append((r, w))
            await asyncio.sleep(0.2)
            others = await asyncio.gather(
                *(
                    raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    for _ in range(5)
                )
            )
            for _r, w in uploads:
                w.write(b"world")
            answers = [await asyncio.wait_for(r.readuntil(b"helloworld"), 5) for r, _w in uploads]
            for _r, w in uploads:
                w.close()
    assert [o[:12] for o in others] == [b"HTTP/1.1 200"] * 5
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert counter["requests"] == 15
    assert counter["connections"] <= 2


@pytest.mark.parametrize("buffer", ["64KB", "8B"], ids=["buffered", "streaming"])
async def test_a_stalled_request_body_is_cut_with_408(buffer: str) -> None:
    """Buffered (nothing reached the service) or streaming (the head and some bytes did): the
    client gets a 408 and the upstream connection is not reused mid-request."""
    counter = {"connections": 0, "requests": 0}
    cfg = config(0)
    cfg["limits"] = {"body_read_timeout": "300ms", "request_buffer_bytes": buffer}
    async with backend(_counting_backend(counter)) as bport:  # type: ignore[arg-type]
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, _):
            out = await raw_http(
                gport, b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 20, wait=4
            )
            after = await raw_http(gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 408"), out
    assert b"application/problem+json" in out
    assert b"connection: close" in out
    assert after.startswith(b"HTTP/1.1 200")
    assert counter["requests"] == 1  # the stalled one never completed at the service


async def test_an_aborted_upload_leaves_no_unretrieved_task_error(caplog: pytest.LogCaptureFixture) -> None:
    """A client that goes away mid-upload (the body is streaming upstream) used to leave the body
    sender's ClientDisconnected in a task nobody awaited: "Task exception was never retrieved"."""
    received = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await r.read(10)
        received.set()
        await asyncio.sleep(2)  # never answers: the gateway is still sending the body
        w.close()

    cfg = config(0)
    cfg["limits"] = {"request_buffer_bytes": "8B"}
    async with backend(handler) as bport:
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, _):
            for _ in range(3):
                received.clear()
                _r, w = await asyncio.open_connection("127.0.0.1", gport)
                w.write(b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                await asyncio.wait_for(received.wait(), 5)
                w.transport.abort()
                await asyncio.sleep(0.1)
            gc.collect()
            await asyncio.sleep(0.1)
    assert "never retrieved" not in caplog.text
