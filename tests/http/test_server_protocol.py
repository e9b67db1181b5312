"""The downstream HTTP/1.1 engine without a socket (h11's test style): bytes go in through
``data_received``, the test reads back the bytes written and the connection's state. Timeouts are
fired by calling the deadline check with the deadline's own time, so nothing here waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
import pytest
from fakes import Conn, response, responses, settle

from edgeway.http.errors import BodyTooLarge, ClientDisconnected, RequestRejected
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.limits import ServerLimits
from edgeway.http.server import ConnState, Handler

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


async def echo(ex: Exchange) -> None:
    body = await ex.body.read_all(1 << 20)
    ex.respond(200, [(b"x-path", ex.path), (b"x-query", ex.query)], body or ex.method + b" " + ex.target)


def gated(gate: asyncio.Event, seen: list[Exchange] | None = None) -> Handler:
    """A handler that waits for ``gate`` before it reads the body and answers."""

    async def handler(ex: Exchange) -> None:
        if seen is not None:
            seen.append(ex)
        await gate.wait()
        await echo(ex)

    return handler


def fire_deadline(c: Conn) -> None:
    """What the listener's ticker does once the armed deadline has passed."""
    assert c.protocol.deadline, "no deadline armed"
    c.protocol.check_deadline(c.protocol.deadline)


# -- parsing and keep-alive -----------------------------------------------------------------
async def test_a_request_gets_its_response_and_the_connection_waits_for_the_next() -> None:
    c = Conn(echo)
    assert c.protocol.state is ConnState.WAITING
    assert c.transport.buffer_limits == (64 * 1024, 16 * 1024)
    r = response(await c.send(b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert (r.status, r.header(b"x-path"), r.header(b"x-query"), r.body) == (
        200,
        b"/p",
        b"q=1",
        b"GET /p?q=1",
    )
    assert r.header(b"connection") is None
    assert not c.closed
    assert c.protocol.state is ConnState.WAITING
    assert c.protocol.is_idle
    # the keep-alive deadline is armed; when it fires, the idle connection closes quietly
    fire_deadline(c)
    assert c.closed
    assert c.transport.take() == b""


async def test_a_request_fed_one_byte_at_a_time_parses_the_same() -> None:
    c = Conn(echo)
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Request-Id: r1\r\n\r\nhello"
    for i in range(len(data)):
        c.feed(data[i : i + 1])
    await settle()
    r = response(c.transport.take())
    assert (r.status, r.body) == (200, b"hello")


async def test_the_exchange_carries_the_request_as_parsed() -> None:
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        ex.respond(204, [])

    c = Conn(handler)
    await c.send(
        b"GET http://a/x/y?z HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid\r\n"
        b"Traceparent: 00-abc-def-01\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
    )
    (ex,) = seen
    assert (ex.method, ex.target, ex.path, ex.query, ex.host) == (b"GET", b"/x/y?z", b"/x/y", b"z", b"a")
    assert (ex.http_version, ex.scheme, ex.client) == (b"1.1", b"http", "203.0.113.9")
    assert (ex.request_id, ex.traceparent) == (b"rid", b"00-abc-def-01")
    assert ex.header(b"x-two") == b"1"
    assert ex.header(b"absent") is None
    assert ex.keep_alive
    assert ex.content_length is None
    assert not ex.chunked_request
    assert ex.body.complete
    assert "GET /x/y?z" in repr(ex)
    assert "waiting" in repr(c.protocol)


async def test_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    gate = asyncio.Event()
    seen: list[Exchange] = []
    c = Conn(gated(gate, seen))
    out = await c.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert out == b""  # the first is still being handled; the others wait their turn
    assert [ex.path for ex in seen] == [b"/1"]
    gate.set()
    await settle()
    got = responses(c.transport.take())
    assert [(r.header(b"x-path"), r.body) for r in got] == [
        (b"/1", b"GET /1"),
        (b"/2", b"abc"),
        (b"/3", b"GET /3"),
    ]
    assert c.protocol.is_idle


async def test_connection_close_from_the_client_ends_the_connection_after_the_response() -> None:
    c = Conn(echo)
    r = response(await c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET))
    assert r.header(b"connection") == b"close"
    assert c.closed


async def test_http_1_0_closes_by_default_and_keeps_alive_when_asked() -> None:
    c = Conn(echo)
    r = response(await c.send(b"GET / HTTP/1.0\r\n\r\n"))  # no Host needed in 1.0
    assert (r.status, r.header(b"connection")) == (200, b"close")
    assert c.closed

    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        await echo(ex)

    c = Conn(handler)
    r = response(await c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    assert r.header(b"connection") is None
    assert seen[0].http_version == b"1.0"
    assert not c.closed


async def test_a_streamed_response_to_http_1_0_is_not_chunked_and_ends_with_the_connection() -> None:
    async def streams(ex: Exchange) -> None:
        ex.start(200, [(b"content-type", b"text/plain")])
        ex.write(b"one,")
        ex.write(b"two")
        ex.finish()

    for request in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"):
        c = Conn(streams)
        raw = await c.send(request)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head.lower()
        assert body == b"one,two"  # delimited by the close, not by chunks
        assert c.closed
    c = Conn(streams)  # HTTP/1.1 keeps the chunked coding and the connection
    raw = await c.send(GET)
    assert b"transfer-encoding: chunked" in raw
    assert response(raw).body == b"one,two"
    assert not c.closed


async def test_absolute_form_naming_the_host_is_served_as_origin_form() -> None:
    c = Conn(echo)
    got = responses(
        await c.send(
            b"GET HTTPS://A/x HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n"
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
        )
    )
    assert [r.header(b"x-path") for r in got] == [b"/x", b"/", b"*"]


async def test_a_new_handler_serves_the_next_request_on_an_open_connection() -> None:
    async def other(ex: Exchange) -> None:
        ex.respond(202, [])

    c = Conn(echo)
    assert response(await c.send(GET)).status == 200
    c.protocol.set_handler(other)
    assert response(await c.send(GET)).status == 202


# -- requests refused while parsing -----------------------------------------------------------
REFUSED = [
    (b"GET / HTTP/1.1\r\n\r\n", 400, "without Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nauthorization: y\r\n\r\n", 400, "more than one"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: x\r\nContent-Type: y\r\n\r\n", 400, "more than one"),
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, "CONNECT"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "transfer codings"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417, "100-continue"),
    (b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "does not match Host"),
    (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "origin-form"),
    (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, "fragment"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413, "larger than 10"),
    (b"GET /" + b"u" * 40 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "longer than 32"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 200 + b"\r\n\r\n", 431, "larger than 128"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 6 + b"\r\n", 431, "more than 6"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, ""),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, ""),
]


@pytest.mark.parametrize(("data", "status", "reason"), REFUSED)
async def test_a_refused_request_gets_a_problem_and_the_connection_closes(
    data: bytes, status: int, reason: str
) -> None:
    limits = ServerLimits(max_body_bytes=10, max_url_bytes=32, max_header_bytes=128, max_headers=6)
    handled: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        handled.append(ex)
        await echo(ex)

    c = Conn(handler, limits)
    r = response(await c.send(data + GET))  # the request behind it is never read
    assert r.status == status
    assert (r.header(b"content-type"), r.header(b"connection")) == (b"application/problem+json", b"close")
    problem = orjson.loads(r.body)
    assert problem["status"] == status
    assert reason in problem["detail"]
    assert c.closed
    assert handled == []
    assert [s for s, _ in c.rejections] == [status]


@pytest.mark.parametrize("version", [b"2.0", b"0.9"])
async def test_an_http_version_other_than_1_x_is_refused_with_505(version: bytes) -> None:
    c = Conn(echo)
    r = response(await c.send(b"GET / HTTP/%b\r\nHost: a\r\n\r\n" % version))
    assert r.status == 505
    assert c.closed


async def test_a_request_refused_behind_one_in_progress_does_not_overtake_it() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate))
    assert await c.send(GET + b"NOT HTTP\r\n\r\n") == b""
    assert not c.transport.reading  # nothing more is read from a broken stream
    gate.set()
    await settle()
    # The request before the error is answered, and the connection ends there.
    r = response(c.transport.take())
    assert (r.status, r.header(b"connection")) == (200, b"close")
    assert c.closed


# -- bodies ------------------------------------------------------------------------------------
async def test_a_chunked_body_is_decoded_and_its_trailers_never_reach_the_headers() -> None:
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        await echo(ex)

    c = Conn(handler)
    r = response(
        await c.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Identity: admin\r\n\r\n"
        )
    )
    assert r.body == b"hello!"
    assert seen[0].chunked_request
    assert seen[0].header(b"x-identity") is None
    assert c.protocol.is_idle


@pytest.mark.parametrize(
    ("trailers", "status"),
    [(b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n", 431), (b"X-Big: " + b"t" * 300 + b"\r\n", 431)],
)
async def test_trailers_are_bounded_like_the_head(trailers: bytes, status: int) -> None:
    c = Conn(echo, ServerLimits(max_headers=2, max_header_bytes=256))
    c.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = response(await c.send(b"1\r\nx\r\n0\r\n" + trailers + b"\r\n"))
    assert r.status == status
    assert c.closed


async def test_chunk_extensions_beyond_the_header_budget_are_refused() -> None:
    c = Conn(echo, ServerLimits(max_header_bytes=64))
    c.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = response(await c.send(b"1;" + b"e" * 200 + b"\r\nx\r\n"))
    assert r.status == 400
    assert "chunk extensions" in orjson.loads(r.body)["detail"]
    assert c.closed


async def test_a_chunked_body_past_the_limit_fails_the_reader_with_413() -> None:
    failures: list[Exception] = []

    async def handler(ex: Exchange) -> None:
        try:
            await ex.body.read_all(1 << 20)
        except BodyTooLarge as exc:
            failures.append(exc)
            raise

    c = Conn(handler, ServerLimits(max_body_bytes=10))
    c.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = response(await c.send(b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"))
    assert (r.status, r.header(b"connection")) == (413, b"close")
    assert len(failures) == 1
    assert c.closed


async def test_a_malformed_chunk_fails_the_reader_with_400() -> None:
    c = Conn(echo)
    c.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = response(await c.send(b"zz\r\nhello\r\n"))
    assert r.status == 400
    assert c.closed


async def test_an_unread_body_closes_the_connection_after_the_response() -> None:
    async def ignores_body(ex: Exchange) -> None:
        ex.respond(401, [])

    c = Conn(ignores_body)
    r = response(await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc"))
    assert r.status == 401
    assert c.closed  # the stream is not at a message boundary: no further request on it


async def test_without_a_body_limit_any_length_is_accepted() -> None:
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        ex.respond(200, [])

    c = Conn(handler, ServerLimits(max_body_bytes=None))
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n")
    assert seen[0].content_length == 99999999999


# -- Expect: 100-continue ------------------------------------------------------------------------
async def test_100_continue_is_sent_only_when_the_handler_reads_the_body() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate), ServerLimits(body_read_timeout=5.0))
    out = await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert out == b""
    # The client holds its body back until it gets the 100: no body timeout runs meanwhile.
    assert c.protocol.deadline == 0.0
    gate.set()
    await settle()
    assert c.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert c.protocol.deadline > 0.0  # now the client must send
    r = response(await c.send(b"hello"))
    assert (r.status, r.body) == (200, b"hello")


async def test_a_request_refused_before_its_body_is_read_gets_no_100() -> None:
    async def refuse(ex: Exchange) -> None:
        assert ex.expect_continue
        ex.respond(403, [])

    c = Conn(refuse)
    out = await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n")
    assert b"100 Continue" not in out
    assert response(out).status == 403
    assert c.closed


# -- flow control --------------------------------------------------------------------------------
async def test_reading_pauses_while_a_body_waits_unread_and_resumes_as_it_is_read() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate), ServerLimits(read_high_water=10, read_low_water=4))
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\n" + b"a" * 20)
    assert not c.transport.reading
    assert c.protocol.deadline == 0.0  # the body timeout does not run while the gateway holds back
    gate.set()
    await settle()
    assert c.transport.reading
    r = response(await c.send(b"b" * 10))
    assert r.body == b"a" * 20 + b"b" * 10


async def test_too_many_pipelined_requests_pause_reading_until_the_queue_drains() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate), ServerLimits(max_pipelined=2))
    await c.send(GET * 4)
    assert not c.transport.reading
    gate.set()
    await settle()
    assert len(responses(c.transport.take())) == 4
    assert c.transport.reading


async def test_drain_waits_while_the_client_is_not_reading() -> None:
    drained = asyncio.Event()

    async def streams(ex: Exchange) -> None:
        ex.start(200, [], 3)
        assert ex.write_paused()
        await ex.drain()
        drained.set()
        ex.finish(b"abc")

    c = Conn(streams)
    c.protocol.pause_writing()
    head = await c.send(GET)
    assert not drained.is_set()
    c.protocol.resume_writing()
    await settle()
    assert drained.is_set()
    assert response(head + c.transport.take()).body == b"abc"


async def test_a_client_lost_during_drain_fails_the_writer() -> None:
    failures: list[Exception] = []

    async def streams(ex: Exchange) -> None:
        ex.start(200, [])
        try:
            await ex.drain()
        except ClientDisconnected as exc:
            failures.append(exc)

    c = Conn(streams)
    c.protocol.pause_writing()
    await c.send(GET)
    c.protocol._write.lost(ClientDisconnected("gone"))  # what connection_lost tells the writer
    await settle()
    assert len(failures) == 1


# -- timeouts ------------------------------------------------------------------------------------
async def test_a_connection_that_sends_nothing_is_closed_without_a_response() -> None:
    c = Conn(echo)
    fire_deadline(c)
    assert c.closed
    assert c.transport.take() == b""


async def test_a_head_not_complete_in_time_gets_408() -> None:
    c = Conn(echo)
    c.feed(b"GET / HTTP/1.1\r\nHost:")
    fire_deadline(c)
    r = response(c.transport.take())
    assert (r.status, r.header(b"connection")) == (408, b"close")
    assert c.closed
    assert c.rejections == [(408, "request head not received in time")]


async def test_a_head_timeout_behind_a_running_request_is_answered_after_its_response() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate))
    await c.send(GET + b"GET /next HTTP/1.1\r\nHo")
    fire_deadline(c)
    assert c.transport.take() == b""
    assert not c.transport.reading
    gate.set()
    await settle()
    assert [r.status for r in responses(c.transport.take())] == [200, 408]
    assert c.closed


async def test_a_body_not_received_in_time_fails_the_reader_with_408() -> None:
    c = Conn(echo, ServerLimits(body_read_timeout=1.0))
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    fire_deadline(c)
    await settle()
    r = response(c.transport.take())
    assert (r.status, r.header(b"connection")) == (408, b"close")
    assert c.closed


async def test_a_deadline_not_yet_due_does_nothing() -> None:
    c = Conn(echo)
    c.protocol.check_deadline(c.protocol.deadline - 0.5)
    assert not c.closed
    assert c.protocol.deadline > 0.0


# -- handlers that fail ----------------------------------------------------------------------------
async def test_a_handler_error_before_the_response_is_a_500_and_the_connection_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(ex: Exchange) -> None:
        raise ValueError("bug")

    c = Conn(broken)
    with caplog.at_level(logging.ERROR, "edgeway.http"):
        r = response(await c.send(GET))
    assert r.status == 500
    assert orjson.loads(r.body)["title"] == "Internal Server Error"
    assert not c.closed
    assert "unhandled error in handler" in caplog.text


@pytest.mark.parametrize("error", [ValueError("bug"), RequestRejected(400, "late")])
async def test_a_handler_error_after_the_response_started_cuts_the_connection(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    async def breaks_midway(ex: Exchange) -> None:
        ex.start(200, [], 100, b"partial")
        raise error

    c = Conn(breaks_midway)
    with caplog.at_level(logging.CRITICAL, "edgeway.http"):
        out = await c.send(GET)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"partial")
    assert c.transport.aborted  # a truncated message, never a silently short one


async def test_an_http_error_from_the_handler_becomes_its_status() -> None:
    async def rejects(ex: Exchange) -> None:
        raise RequestRejected(422, "no thanks")

    c = Conn(rejects)
    r = response(await c.send(GET))
    assert (r.status, orjson.loads(r.body)["detail"]) == (422, "no thanks")
    assert not c.closed


async def test_a_handler_that_returns_without_answering_cuts_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def forgets(ex: Exchange) -> None:
        return None

    c = Conn(forgets)
    with caplog.at_level(logging.ERROR, "edgeway.http"):
        await c.send(GET)
    assert c.transport.aborted
    assert "without finishing the response" in caplog.text


# -- the client goes away ---------------------------------------------------------------------------
async def test_a_lost_connection_cancels_the_handler_and_fails_queued_bodies() -> None:
    cancelled = asyncio.Event()
    seen: list[Exchange] = []

    async def waits(ex: Exchange) -> None:
        seen.append(ex)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    c = Conn(waits)
    await c.send(GET + b"POST /q HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    queued = c.protocol._queue[1]
    c.lose()
    await settle()
    assert cancelled.is_set()
    assert c.protocol.state is ConnState.CLOSED
    assert c.observer.closes == 1
    with pytest.raises(ClientDisconnected):
        await queued.body.read_all(100)


async def test_a_connection_lost_before_the_handler_task_ran_still_runs_its_cleanup() -> None:
    # The gateway counts a request in flight in the engine's callback and uncounts it in the
    # task's `finally`; a task cancelled before its first step never reaches that `finally`,
    # leaving a request "in flight" forever (a graceful drain then waits for it to its timeout).
    counted: list[str] = []

    def handler(ex: Exchange) -> Awaitable[None]:
        counted.append("in")

        async def work() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                counted.append("out")

        return work()

    c = Conn(handler)
    c.feed(GET)  # the task is created, not yet started
    c.lose()  # the peer is gone in the same loop turn
    await settle()
    assert counted == ["in", "out"]
    assert c.protocol.state is ConnState.CLOSED


# -- shutdown --------------------------------------------------------------------------------------
async def test_shutdown_closes_an_idle_connection_at_once() -> None:
    c = Conn(echo)
    await c.send(GET)
    c.protocol.shutdown()
    assert c.closed


async def test_shutdown_lets_the_current_request_finish_and_takes_no_further_one() -> None:
    gate = asyncio.Event()
    c = Conn(gated(gate))
    await c.send(GET)
    c.protocol.shutdown()
    assert not c.closed
    gate.set()
    await settle()
    r = response(c.transport.take())
    assert (r.status, r.header(b"connection")) == (200, b"close")
    assert c.closed


async def test_shutdown_tells_a_long_lived_exchange_once() -> None:
    told: list[int] = []
    gate = asyncio.Event()

    async def stream(ex: Exchange) -> None:
        ex.on_server_shutdown(lambda: told.append(1))
        await gate.wait()
        ex.respond(200, [])

    c = Conn(stream)
    await c.send(GET)
    c.protocol.shutdown()
    c.protocol.shutdown()
    assert told == [1]
    gate.set()
    await settle()
    assert c.closed


# -- upgrade -----------------------------------------------------------------------------------------
class Tunnelled:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.paused: list[bool] = []
        self.lost = False

    def from_downstream(self, data: bytes) -> None:
        self.data.append(data)

    def downstream_lost(self) -> None:
        self.lost = True

    def downstream_paused(self, paused: bool) -> None:
        self.paused.append(paused)


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n"


async def test_an_accepted_upgrade_hands_the_connection_and_the_early_bytes_to_the_tunnel() -> None:
    tunnel = Tunnelled()
    early: list[bytes] = []

    async def upgrades(ex: Exchange) -> None:
        assert ex.upgrade == b"websocket"
        protocol = ex.switch_protocols([(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
        early.append(protocol.take_upgrade(tunnel))

    c = Conn(upgrades)
    out = await c.send(UPGRADE + b"EARLY")
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"content-length" not in out
    assert early == [b"EARLY"]
    assert c.protocol.state is ConnState.UPGRADED
    assert c.transport.reading
    assert c.protocol.deadline == 0.0
    c.feed(b"frame")
    c.protocol.pause_writing()
    c.protocol.resume_writing()
    c.lose()
    assert (tunnel.data, tunnel.paused, tunnel.lost) == ([b"frame"], [True, False], True)


async def test_a_declined_upgrade_is_answered_and_the_connection_closes() -> None:
    c = Conn(echo)
    r = response(await c.send(UPGRADE + b"EARLY"))
    assert r.status == 200
    assert c.closed  # the bytes after the head belong to a protocol nobody speaks here


async def test_upgrade_without_connection_upgrade_is_a_plain_request() -> None:
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        seen.append(ex)
        ex.respond(200, [])

    c = Conn(handler)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
    assert seen[0].upgrade is None
    assert not c.closed


# -- what the exchange writes -------------------------------------------------------------------------
def answering(write: Callable[[Exchange], None]) -> Handler:
    async def handler(ex: Exchange) -> None:
        write(ex)

    return handler


async def test_head_announces_the_length_without_sending_the_body() -> None:
    c = Conn(answering(lambda ex: ex.respond(200, [], b"hello")))
    out = await c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.endswith(b"content-length: 5\r\n\r\n")


@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_statuses_carry_neither_length_nor_body(status: int) -> None:
    c = Conn(answering(lambda ex: ex.respond(status, [], b"ignored")))
    out = await c.send(GET)
    assert b"content-length" not in out
    assert out.endswith(b"\r\n\r\n")


async def test_a_stream_without_length_is_chunked() -> None:
    def stream(ex: Exchange) -> None:
        ex.start(200, [(b"content-type", b"text/plain")], first=b"he")
        ex.write(b"llo")
        ex.write(b"")
        ex.finish(b"!")

    c = Conn(answering(stream))
    out = await c.send(GET)
    assert b"transfer-encoding: chunked\r\n" in out
    assert out.endswith(b"\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n1\r\n!\r\n0\r\n\r\n")
    assert response(out).body == b"hello!"


async def test_a_stream_to_head_sends_only_the_head() -> None:
    def stream(ex: Exchange) -> None:
        ex.start(200, [], None, b"x")
        ex.write(b"y")
        ex.finish(b"z")

    c = Conn(answering(stream))
    out = await c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.endswith(b"\r\n\r\n")
    assert b"x" not in out.split(b"\r\n\r\n", 1)[1]


async def test_problem_responses_state_status_title_and_request_id() -> None:
    def problem(ex: Exchange) -> None:
        ex.add_response_header(b"x-extra", b"1")
        ex.respond_problem(
            409,
            "Conflict",
            "taken",
            [(b"x-h", b"2")],
            members={"type": "urn:x", "status": 1, "detail": "no"},
            n=3,
        )

    c = Conn(answering(problem))
    r = response(await c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: rq\r\n\r\n"))
    assert (r.status, r.header(b"x-h"), r.header(b"x-extra")) == (409, b"2", b"1")
    assert orjson.loads(r.body) == {
        "type": "urn:x",
        "title": "Conflict",
        "status": 409,
        "detail": "taken",
        "request_id": "rq",
        "n": 3,
    }


async def test_json_responses_and_a_tap_see_the_same_bytes() -> None:
    class Tap:
        def __init__(self) -> None:
            self.events: list[object] = []

        def head(self, status: int, headers: Headers, content_length: int | None) -> None:
            self.events.append(("head", status, content_length))

        def body(self, chunk: bytes) -> None:
            self.events.append(chunk)

        def end(self) -> None:
            self.events.append("end")

        def abort(self) -> None:
            self.events.append("abort")

    taps: list[Tap] = []

    def json(ex: Exchange) -> None:
        tap = Tap()
        taps.append(tap)
        ex.tap = tap
        ex.respond_json(200, {"a": 1}, [(b"x", b"y")])

    c = Conn(answering(json))
    r = response(await c.send(GET))
    assert (r.header(b"content-type"), r.body) == (b"application/json", b'{"a":1}')
    assert taps[0].events == [("head", 200, 7), b'{"a":1}', "end"]

    def streamed(ex: Exchange) -> None:
        tap = Tap()
        taps.append(tap)
        ex.tap = tap
        ex.start(200, [], None, b"a")
        ex.write(b"b")
        ex.abort()
        assert ex.state is ResponseState.DONE

    c = Conn(answering(streamed))
    await c.send(GET)
    assert taps[1].events == [("head", 200, None), b"a", b"b", "abort"]
    assert c.transport.aborted
