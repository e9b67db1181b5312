"""Message framing at the gateway's two edges, over real sockets: trailers, transfer codings and
slow request bodies (what a client or a service controls byte by byte)."""

from __future__ import annotations

import asyncio

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
