"""The downstream engine over real sockets: keep-alive, pipelining, limits, smuggling, timeouts."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from engine_helpers import closed_after, echo, serving

from conftest import raw_http as raw
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits


async def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(ex: Exchange) -> None:
        if ex.path == b"/slow":
            await asyncio.sleep(0.2)
        await echo(ex)

    async with serving(slow_first) as srv:
        out = await raw(
            srv.port,
            b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n",
            wait=1.0,
        )
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.index(b"x-path: /slow") < out.index(b"x-path: /b") < out.index(b"x-path: /c")
    assert b"\r\n\r\nabc" in out


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with serving(echo) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        for i in range(20):
            w.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            head = await r.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            await r.readexactly(length)
        w.close()


async def test_chunked_request_body_is_decoded() -> None:
    async with serving(echo) as srv:
        out = await raw(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
            wait=0.5,
        )
    assert out.endswith(b"\r\n\r\nhello world")


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "CL+TE",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "dup CL"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "dup same CL"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", "NUL in value"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "CR in value"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "bad chunk",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", "TE not chunked"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "TE in HTTP/1.0"),
        (b"GET / HTTP/1.1\r\n\r\n", "no Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
        (b"GET http://evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n", "absolute-form other host"),
        (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", "not origin-form"),
        (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "space before colon"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", "signed CL"),
    ],
)
async def test_smuggling_vectors_get_400_and_the_connection_closes(request_bytes: bytes, why: str) -> None:
    seen: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        await ex.body.read_all(1 << 20)  # a broken body must fail here, never complete
        seen.append(ex.target)
        await echo(ex)

    async with serving(handler) as srv:
        out, closed = await closed_after(srv.port, request_bytes + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 501"), (why, out)
    assert closed, why
    assert b"/next" not in out, why
    assert seen == [], why


async def test_absolute_form_for_the_same_host_is_accepted_as_origin_form() -> None:
    async with serving(echo) as srv:
        out = await raw(srv.port, b"GET http://a/x?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"x-path: /x" in out


async def test_header_limits_answer_431_and_url_limit_414() -> None:
    limits = ServerLimits(max_header_bytes=1024, max_headers=10, max_url_bytes=100)
    async with serving(echo, limits) as srv:
        big = await raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        many = await raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-N: 1\r\n" * 11 + b"\r\n")
        long_url = await raw(srv.port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431")
    assert many.startswith(b"HTTP/1.1 431")
    assert long_url.startswith(b"HTTP/1.1 414")


async def test_body_limit_413_by_content_length_and_while_streaming_chunked() -> None:
    limits = ServerLimits(max_body_bytes=10)
    async with serving(echo, limits) as srv:
        by_length = await raw(
            srv.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n" + b"x" * 11
        )
        by_chunks = await raw(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
        )
    assert by_length.startswith(b"HTTP/1.1 413")
    assert by_chunks.startswith(b"HTTP/1.1 413")


async def test_slow_request_head_gets_408() -> None:
    async with serving(echo, ServerLimits(header_read_timeout=0.3)) as srv:
        out, closed = await closed_after(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n", wait=2.0)
    assert out.startswith(b"HTTP/1.1 408")
    assert closed


async def test_idle_keep_alive_connection_is_closed_after_timeout() -> None:
    async with serving(echo, ServerLimits(keepalive_timeout=0.3)) as srv:
        out, closed = await closed_after(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", wait=2.0)
    assert out.startswith(b"HTTP/1.1 200")
    assert closed


async def test_expect_100_continue_is_answered_when_the_handler_reads_the_body() -> None:
    async with serving(echo) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.write(b"hello")
        final = await asyncio.wait_for(r.readuntil(b"hello"), 2)
        assert final.startswith(b"HTTP/1.1 200")
        w.close()


async def test_graceful_shutdown_finishes_in_flight_and_closes_idle() -> None:
    started = asyncio.Event()

    async def slow(ex: Exchange) -> None:
        started.set()
        await asyncio.sleep(0.3)
        ex.respond(200, [], b"done")

    async with serving(slow) as srv:
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", srv.port)
        busy = asyncio.create_task(raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", wait=3))
        await started.wait()
        forced = await srv.shutdown(2.0)
        out = await busy
        assert await idle_r.read() == b""  # idle connection closed
        idle_w.close()
    assert forced == 0
    assert out.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in out
    assert out.endswith(b"done")


async def test_handler_error_becomes_problem_json_500() -> None:
    async def boom(ex: Exchange) -> None:
        raise ValueError("nope")

    async with serving(boom) as srv:
        out = await raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500")
    assert b"application/problem+json" in out


# -- framing a client controls: trailers, transfer codings, chunk extensions, slow bodies ------


async def test_request_trailers_never_join_the_header_list() -> None:
    """Trailer fields arrive after the head; a handler that looks at the headers after reading the
    body (a proxy behind validation) must see the head only, whatever the trailers say."""
    seen: list[list[tuple[bytes, bytes]]] = []
    request_ids: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        body = await ex.body.read_all(1 << 20)
        seen.append(list(ex.headers))
        request_ids.append(ex.request_id)
        ex.respond(200, [], body)

    async with serving(handler) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nX-Request-ID: head-id\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"3\r\nabc\r\n")
        await asyncio.sleep(0.1)  # the handler is waiting for the rest of the body
        w.write(b"0\r\nX-Edgeway-Subject: admin\r\nX-Request-ID: trailer-id\r\nHost: b\r\n\r\n")
        w.write(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        out = await asyncio.wait_for(r.read(), 5)
        w.close()
    assert out.count(b"HTTP/1.1 200") == 2
    assert b"\r\n\r\nabc" in out
    assert [name.lower() for name, _ in seen[0]] == [b"host", b"x-request-id", b"transfer-encoding"]
    assert request_ids[0] == b"head-id"


@pytest.mark.parametrize(
    ("trailers", "status"),
    [
        (b"X-Big: " + b"a" * 2000 + b"\r\n", b"431"),
        (b"X-N: 1\r\n" * 11, b"431"),
        (b"X: a\r\n b\r\n", b"400"),  # obs-fold in a trailer
        (b"X: a\nY: b\r\n", b"400"),  # bare LF in a trailer
    ],
)
async def test_a_trailer_section_is_bounded_and_parsed_as_strictly_as_the_head(
    trailers: bytes, status: bytes
) -> None:
    limits = ServerLimits(max_header_bytes=1024, max_headers=10)
    async with serving(echo, limits) as srv:
        out, closed = await closed_after(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
            + trailers
            + b"\r\n",
        )
    assert out.startswith(b"HTTP/1.1 " + status), out
    assert b"application/problem+json" in out
    assert closed


@pytest.mark.parametrize(
    "transfer_encoding",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: deflate,chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ],
)
async def test_a_transfer_coding_besides_chunked_is_501_not_dropped(transfer_encoding: bytes) -> None:
    reached: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        reached.append(await ex.body.read_all(1 << 20))
        ex.respond(200, [])

    async with serving(handler) as srv:
        out, closed = await closed_after(
            srv.port, b"POST / HTTP/1.1\r\nHost: a\r\n" + transfer_encoding + b"\r\n3\r\nabc\r\n0\r\n\r\n"
        )
    assert out.startswith(b"HTTP/1.1 501"), out
    assert b"chunked" in out
    assert closed
    assert reached == []


async def test_chunked_with_empty_list_elements_is_still_chunked() -> None:
    async with serving(echo) as srv:
        out = await raw(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked \r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )
    assert out.startswith(b"HTTP/1.1 200")
    assert out.endswith(b"abc")


@pytest.mark.parametrize(
    "chunks",
    [
        # one chunk line with a long extension, sent over several reads
        [b"3;" + b"e" * 20_000, b"x" * 20_000, b"\r\nabc\r\n0\r\n\r\n"],
        # many small chunks, each with a moderate extension (and leading zeros)
        [b"1;name=" + b"v" * 100 + b"\r\nx\r\n" for _ in range(400)] + [b"0000000000" * 50 + b"1\r\nx\r\n"],
    ],
)
async def test_chunk_extensions_count_toward_a_limit(chunks: list[bytes]) -> None:
    reached: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        reached.append(await ex.body.read_all(1 << 20))
        ex.respond(200, [])

    limits = ServerLimits(max_header_bytes=4096)
    async with serving(handler, limits) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        # Read while sending: the answer comes before the client has sent everything.
        answer = asyncio.create_task(r.read(4096))
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            if answer.done():
                break
            w.write(chunk)
            with contextlib.suppress(ConnectionError):
                await w.drain()
            await asyncio.sleep(0.002)  # separate reads: the limit is counted per read
        out = await asyncio.wait_for(answer, 3)
        w.close()
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"chunk extensions" in out
    assert reached == []


async def test_small_chunk_extensions_are_accepted() -> None:
    async with serving(echo, ServerLimits(max_header_bytes=1024)) as srv:
        body = b"".join(b"1;ext=%d\r\n%d\r\n" % (i, i % 10) for i in range(300)) + b"0\r\n\r\n"
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 500):
            w.write(body[i : i + 500])
            await w.drain()
            await asyncio.sleep(0.002)
        out = await asyncio.wait_for(r.read(), 5)
        w.close()
    assert out.startswith(b"HTTP/1.1 200"), out
    assert out.endswith(b"".join(b"%d" % (i % 10) for i in range(300)))


async def test_trailer_bytes_in_a_content_length_message_are_the_next_request() -> None:
    async with serving(echo) as srv:
        out, closed = await closed_after(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcX-Edgeway-Subject: admin\r\n\r\n",
        )
    # The stray bytes are not a trailer but a malformed next request: the connection closes
    # after the first answer, which says so.
    assert out.startswith(b"HTTP/1.1 200")
    assert out.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in out
    assert closed


async def test_a_stalled_request_body_gets_408_and_the_connection_closes() -> None:
    started = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        started.set()
        await echo(ex)

    async with serving(handler, ServerLimits(body_read_timeout=0.3)) as srv:
        out, closed = await closed_after(
            srv.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", wait=3.0
        )
    assert started.is_set()
    assert out.startswith(b"HTTP/1.1 408"), out
    assert b"request body not received in time" in out
    assert closed


async def test_a_slow_but_steady_body_is_not_cut_and_expect_continue_waits_for_the_handler() -> None:
    async def late_reader(ex: Exchange) -> None:
        await asyncio.sleep(0.6)  # longer than the body timeout before it asks for the body
        await echo(ex)

    async with serving(late_reader, ServerLimits(body_read_timeout=0.4)) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        for byte in b"hello":
            await asyncio.sleep(0.15)
            w.write(bytes([byte]))
        steady = await asyncio.wait_for(r.readuntil(b"hello"), 5)
        w.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        w.write(b"world")
        waited = await asyncio.wait_for(r.readuntil(b"world"), 5)
        w.close()
    assert steady.startswith(b"HTTP/1.1 200")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert waited.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "start",
    [b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ", b"GET / HTTP/1.1\r\nHost: a\r\nX-"],
    ids=["value", "name"],
)
async def test_a_header_line_that_never_ends_is_431_as_it_grows(start: bytes) -> None:
    """The header limits were checked when a line was whole: one whose value (or name) never
    ended was buffered to the head timeout, 60-80 MB per connection from loopback in 10 s, with
    httptools joining the pieces on the event loop. Now the head's bytes are counted per read."""
    limits = ServerLimits(max_header_bytes=1024, max_url_bytes=100, header_read_timeout=60)
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        await echo(ex)

    async with serving(handler, limits) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        out = bytearray()

        async def read() -> None:
            # Read all along: the server closes with unread bytes in its buffer, the client then
            # gets a reset, and a reader that had waited would lose the answer.
            with contextlib.suppress(ConnectionError):
                while chunk := await r.read(65536):
                    out.extend(chunk)

        reading = asyncio.create_task(read())
        w.write(start)
        with contextlib.suppress(ConnectionError):
            for _ in range(256):  # 1 MiB, a piece at a time, unless the server answers first
                if reading.done():
                    break
                w.write(b"a" * 4096)
                await w.drain()
                await asyncio.sleep(0)
        # Generous for a loaded machine: the 431 is due once ~6 KiB are in.
        await asyncio.wait_for(reading, 10)
        w.close()
    assert out.startswith(b"HTTP/1.1 431")
    assert b'"detail":"request head larger than 5220 bytes"' in out
    assert seen == []
