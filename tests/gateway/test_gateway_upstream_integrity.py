"""What an upstream sends can never leak past its own exchange: black-box tests over real sockets.

Each test drives the gateway with raw bytes from a client and a raw asyncio "service" that
misbehaves on purpose: a response that runs past its declared length, bytes on an idle pooled
connection, a 101 nobody asked for, an upgrade to another protocol (h2c smuggling). The other
half checks the pool's accounting: WebSocket sessions and refused upgrades give their upstream
connection back, so ordinary requests keep working however many sessions came before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from typing import Any

import pytest
from gateway_helpers import backend, config, gateway, read_request

from conftest import raw_http

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
# What an attacker appends to a legitimate response, hoping it becomes someone else's answer.
SMUGGLED = (
    b"HTTP/1.1 302 Found\r\nlocation: https://evil.example/\r\nset-cookie: session=evil\r\n"
    b"content-length: 3\r\n\r\nbad"
)
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def switching(upgrade: bytes, accept: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: " + upgrade + b"\r\nconnection: upgrade\r\n"
        b"sec-websocket-accept: " + accept + b"\r\n\r\n"
    )


def parse(raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(b":", 1) for ln in lines[1:] if b":" in ln)}
    return int(lines[0].split()[1]), headers, body


def small_pool(port: int, **extra: Any) -> dict[str, Any]:
    return config(port, pool={"max_connections": 2}, timeouts={"connect": "300ms"}, **extra)


async def get(port: int, path: bytes = b"/api/x", method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return await raw_http(
        port, method + b" " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + extra + b"\r\n"
    )


# --------------------------------------------------------------------------- framing


def serving(answers: list[bytes], seen: list[int]) -> Any:
    """A keep-alive service answering the n-th request (over all connections) with answers[n]
    (OK once they run out); ``seen`` gets the connection number of every request."""
    count = {"conns": 0, "requests": 0}

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        count["conns"] += 1
        conn = count["conns"]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(r)
                n = count["requests"]
                count["requests"] += 1
                seen.append(conn)
                w.write(answers[n] if n < len(answers) else OK)
                await w.drain()
        w.close()

    return handler


@pytest.mark.parametrize("evil_at", [0, 1], ids=["task-path", "callback-path"])
async def test_bytes_past_the_declared_length_never_reach_a_client_and_close_the_connection(
    evil_at: int,
) -> None:
    """The 2nd request of a kept-alive connection takes the callback path (ProxyAction.start); the 1st
    (a fresh connection) the task path. Either way the extra response is dropped with its
    connection: neither the asking client nor the next one sees it."""
    seen: list[int] = []
    answers = [OK] * evil_at + [b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nfifteen-bytes!!" + SMUGGLED]
    async with backend(serving(answers, seen)) as bport, gateway(config(bport)) as (gport, _):
        outs = [await get(gport) for _ in range(evil_at + 3)]
    status, headers, body = parse(outs[evil_at])
    assert (status, headers[b"content-length"], body) == (200, b"15", b"fifteen-bytes!!")
    for out in outs:
        assert b"evil" not in out  # (not "bad" or "302": a random hex request id may hold those)
        assert not out.endswith(b"bad")
        assert out.startswith(b"HTTP/1.1 200")
    for out in outs[evil_at + 1 :]:
        assert parse(out)[0::2] == (200, b"ok")
    # The poisoned connection was closed: the request after it went on a new one.
    assert seen[evil_at + 1] == seen[evil_at] + 1


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n" + SMUGGLED),
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n" + SMUGGLED),
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad"),
        (b"GET", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + SMUGGLED),
    ],
    ids=["204", "304", "head", "head-with-body", "chunked"],
)
async def test_bytes_after_a_bodiless_or_chunked_response_close_the_connection(
    method: bytes, answer: bytes
) -> None:
    seen: list[int] = []
    async with backend(serving([OK, answer], seen)) as bport, gateway(config(bport)) as (gport, _):
        first = await get(gport)
        second = await get(gport, method=method)
        third = await get(gport)
    assert parse(first)[0] == 200
    assert b"evil" not in second
    assert not second.endswith(b"bad")
    assert parse(second)[2] in (b"", b"ok")
    assert parse(third)[0::2] == (200, b"ok")
    assert b"evil" not in third
    assert seen == [1, 1, 2]


async def test_bytes_on_an_idle_pooled_connection_close_it() -> None:
    seen: list[int] = []
    conns = 0

    async def late_junk(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        conn = conns
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(r)
                seen.append(conn)
                w.write(OK)
                await w.drain()
                if conn == 1:
                    await asyncio.sleep(0.05)
                    w.write(SMUGGLED)  # unsolicited, while the connection idles in the pool
        w.close()

    async with backend(late_junk) as bport, gateway(config(bport)) as (gport, _):
        first = await get(gport)
        await asyncio.sleep(0.2)
        second = await get(gport)
    assert parse(first)[0::2] == (200, b"ok")
    assert parse(second)[0::2] == (200, b"ok")
    assert b"evil" not in second
    assert seen == [1, 2]


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["closing-as-reused", "closed-while-idle"])
async def test_a_service_that_closes_after_every_answer_is_retried_on_a_fresh_connection(
    pause: float,
) -> None:
    # A service that answers keep-alive-looking responses and then closes (many do, without
    # `Connection: close`): the gateway pools the connection, and the next request finds it
    # closing as it writes, or closed. Both are a stale pooled connection, retried once on a
    # fresh one: every request is answered 200, never 502 ("connection is closed").
    async def closes(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(r)
            w.write(OK)
            await w.drain()
        w.close()

    async with backend(closes) as bport, gateway(config(bport)) as (gport, _):
        answers: list[bytes] = []
        for _ in range(5):
            answers += await asyncio.gather(*(get(gport) for _ in range(20)))
            await asyncio.sleep(pause)
    assert [parse(a)[0] for a in answers] == [200] * 100, [a[-120:] for a in answers if parse(a)[0] != 200]


# --------------------------------------------------------------------------- upgrades


def upgrading(seen: list[dict[bytes, bytes]], answer: bytes | None = None) -> Any:
    """A service that records each request's headers and answers an upgrade request with
    ``answer`` (a correct WebSocket 101 by default), then echoes raw bytes; other requests OK."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                _, headers, _ = await read_request(r)
                seen.append(headers)
                if b"upgrade" not in headers:
                    w.write(OK)
                    await w.drain()
                    continue
                key = headers.get(b"sec-websocket-key", b"")
                w.write(answer if answer is not None else switching(b"websocket", ws_accept(key)))
                await w.drain()
                while data := await r.read(65536):
                    seen.append({b"tunnelled": data})
                    w.write(data)
                    await w.drain()
                break
        w.close()

    return handler


async def ws_session(port: int, request: bytes = WS_REQUEST) -> tuple[bytes, asyncio.StreamWriter, Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    async with asyncio.timeout(3):
        head = await r.readuntil(b"\r\n\r\n")
    return head, w, r


async def test_a_websocket_session_is_tunnelled_and_its_101_checked() -> None:
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(config(bport)) as (gport, _):
        head, w, r = await ws_session(gport)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"sec-websocket-accept: " + ws_accept(WS_KEY) in head
        w.write(b"frame")
        async with asyncio.timeout(3):
            assert await r.readexactly(5) == b"frame"
        w.close()
    assert seen[0][b"upgrade"] == b"websocket"
    assert seen[0][b"connection"] == b"upgrade"


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["h2c-on-websocket-route", "websocket-and-h2c", "h2c-on-plain-route"],
)
async def test_only_websocket_is_forwarded_as_an_upgrade(request_: bytes) -> None:
    """h2c smuggling: an upgrade the route does not allow is stripped, and a 101 the service
    answers anyway is refused (502) instead of opening a tunnel past routing and auth."""
    seen: list[dict[bytes, bytes]] = []
    h2c = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"

    async def answers_101_anyway(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            _, headers, _ = await read_request(r)
            seen.append(headers)
            w.write(h2c)
            await w.drain()
            while data := await r.read(65536):
                seen.append({b"tunnelled": data})
        w.close()

    async with backend(answers_101_anyway) as bport, gateway(config(bport)) as (gport, _):
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(request_ + b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(2):
                while chunk := await r.read(65536):
                    out += chunk
        closed = r.at_eof()
        w.close()
    assert b"upgrade" not in seen[0]
    assert b"connection" not in seen[0]
    assert b"http2-settings" not in seen[0]
    assert out.startswith(b"HTTP/1.1 502")
    assert b"application/problem+json" in out
    assert closed
    assert all(b"tunnelled" not in s for s in seen)


@pytest.mark.parametrize(
    "answer",
    [
        switching(b"websocket", ws_accept(b"another key")),
        switching(b"h2c", ws_accept(WS_KEY)),
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nsec-websocket-accept: "
        + ws_accept(WS_KEY)
        + b"\r\n\r\n",
    ],
    ids=["wrong-accept", "other-protocol", "no-accept", "no-connection-upgrade"],
)
async def test_a_101_that_does_not_answer_the_websocket_handshake_is_refused(answer: bytes) -> None:
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen, answer)) as bport, gateway(small_pool(bport)) as (gport, _):
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(WS_REQUEST + b"smuggled")
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(2):
                while chunk := await r.read(65536):
                    out += chunk
        w.close()
        # The refused upgrade gave its pool slot back (the pool holds 2).
        after = [await get(gport) for _ in range(3)]
    assert out.startswith(b"HTTP/1.1 502")
    assert b"switch" in out.lower()
    assert all(b"tunnelled" not in s for s in seen)
    assert [parse(a)[0] for a in after] == [200, 200, 200]


async def test_a_101_to_a_request_that_asked_for_no_upgrade_is_refused() -> None:
    async def always_101(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(r)
            w.write(switching(b"websocket", b"x"))
            await w.drain()
            await r.read()
        w.close()

    async with backend(always_101) as bport, gateway(small_pool(bport)) as (gport, _):
        outs = [await get(gport) for _ in range(3)]  # more than the pool holds
        post = await get(gport, method=b"POST", extra=b"content-length: 2\r\n\r\nhi")
    for out in [*outs, post]:
        assert out.startswith(b"HTTP/1.1 502"), out
        assert b"switch" in out.lower()


async def test_a_websocket_request_without_a_valid_key_is_400() -> None:
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(config(bport)) as (gport, _):
        missing = await raw_http(
            gport, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        twice = await raw_http(
            gport,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Key: " + WS_KEY + b"\r\n\r\n",
        )
    for out in (missing, twice):
        assert out.startswith(b"HTTP/1.1 400")
        assert b"application/problem+json" in out
        assert b"Sec-WebSocket-Key" in out
    assert seen == []


async def test_connection_upgrade_without_an_upgrade_header_is_a_plain_request() -> None:
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n")
    assert parse(out)[0::2] == (200, b"ok")
    assert b"connection" not in seen[0]
    assert b"upgrade" not in seen[0]


# --------------------------------------------------------------------------- pool slots


async def test_websocket_sessions_do_not_use_up_the_pool() -> None:
    """More sessions than the pool holds, one after the other and at the same time; ordinary
    requests are served all along (before: each session kept its slot forever, then 503)."""
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(small_pool(bport)) as (gport, _):
        for _ in range(5):
            head, w, _r = await ws_session(gport)
            assert head.startswith(b"HTTP/1.1 101")
            w.close()
            await asyncio.sleep(0.02)
        assert parse(await get(gport))[0::2] == (200, b"ok")
        sessions = [await ws_session(gport) for _ in range(3)]  # open together, beyond the pool
        assert all(head.startswith(b"HTTP/1.1 101") for head, _, _ in sessions)
        assert parse(await get(gport))[0::2] == (200, b"ok")
        for _, w, _r in sessions:
            w.close()
        await asyncio.sleep(0.05)
        assert [parse(await get(gport))[0] for _ in range(3)] == [200, 200, 200]


# --------------------------------------------------------------------------- response heads


@pytest.mark.parametrize("status", [b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_a_502_never_forwarded(status: bytes) -> None:
    """RFC 9110 §15: a status code is 100-599. ``099`` went out as ``HTTP/1.1 99`` with no framing
    (a client parser fails on it, or reads the next response as its body); 600 and up went out
    as they came."""
    seen: list[int] = []
    answers = [b"HTTP/1.1 " + status + b" Odd\r\ncontent-length: 2\r\n\r\nok"]
    async with backend(serving(answers, seen)) as bport, gateway(config(bport)) as (gport, _):
        out = await get(gport)
        after = await get(gport)
    code, headers, body = parse(out)
    assert code == 502
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["detail"] == f"127.0.0.1:{bport} answered with status {int(status)}, not 100-599"
    assert parse(after)[0::2] == (200, b"ok")  # the next request gets a clean connection


def endless_head(prefix: bytes, line: bytes) -> Any:
    """A service that answers every request with ``prefix`` then ``line`` again and again (up to
    32 MiB), never ending its head; ``sent`` counts the bytes it got written."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(r)
            w.write(prefix)
            block = line * max(1, 65536 // len(line))
            for _ in range(32 * 1024 * 1024 // len(block)):
                w.write(block)
                await w.drain()
            await r.read()
        w.close()

    return handler


@pytest.mark.parametrize(
    ("prefix", "line", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nx-a: ", b"a", "a response head larger than 65536 bytes"),
        (b"HTTP/1.1 200 OK\r\n", b"x-a: 1\r\n", "more than 100 header fields"),
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", "a response head larger than 65536 bytes"),
    ],
    ids=["one-endless-value", "endless-fields", "endless-100-continue"],
)
async def test_a_response_head_past_the_limit_is_a_502_not_buffered(
    prefix: bytes, line: bytes, reason: str
) -> None:
    """Before, the head was buffered whole, however large: httptools joins a value's pieces
    (quadratic copying on the event loop, ~1 s stalls for every client of the gateway) until
    the first-byte timeout answered 504. Now 64 KiB of head (interim 1xx heads included) or 100
    fields is a 502 at once. The first-byte timeout is raised so that only the limit can end it."""
    cfg = config(0, timeouts={"first_byte": "120s", "total": "120s"})
    async with backend(endless_head(prefix, line)) as bport:
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, _):
            out = await raw_http(
                gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", wait=20
            )
    code, headers, body = parse(out)
    assert code == 502
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["detail"] == f"127.0.0.1:{bport} sent {reason}"


def many_fields(count: int) -> Any:
    """A service whose answer carries ``count`` header fields (and ``ok``)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(r)
            fields = b"".join(b"x-f%d: %d\r\n" % (i, i) for i in range(count))
            w.write(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok")
            await w.drain()
        w.close()

    return handler


@pytest.mark.parametrize(("limits", "status"), [(None, 502), ({"max_headers": 300}, 200)])
async def test_a_service_answering_with_many_fields_gets_its_own_limit(
    limits: dict[str, int] | None, status: int
) -> None:
    """150 fields: past the default 100, a 502; within a service's own `response_limits`, passed on."""
    cfg = config(0)
    async with backend(many_fields(149)) as bport:  # and Content-Length: 150
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        if limits is not None:
            cfg["services"]["backend"]["response_limits"] = limits
        async with gateway(cfg) as (gport, _):
            out = await raw_http(
                gport, b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", wait=20
            )
    code, headers, body = parse(out)
    assert code == status, out[:300]
    if status == 200:
        assert body == b"ok"
        assert headers[b"x-f148"] == b"148"


SMUGGLED_REQUEST = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
WS_HEAD = (
    b" /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
    + WS_KEY
    + b"\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize(
    "request_",
    [
        b"GET" + WS_HEAD + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED_REQUEST) + SMUGGLED_REQUEST,
        b"POST" + WS_HEAD + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED_REQUEST) + SMUGGLED_REQUEST,
        b"GET"
        + WS_HEAD
        + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED_REQUEST)
        + SMUGGLED_REQUEST
        + b"\r\n0\r\n\r\n",
        b"POST" + WS_HEAD + b"\r\n",
    ],
    ids=["get-with-length", "post-with-length", "get-chunked", "post"],
)
async def test_a_websocket_upgrade_with_a_body_or_not_a_get_is_400(request_: bytes) -> None:
    """RFC 6455 §4.1: the handshake is a GET. With a body, the service got a head announcing it
    and no body at all (the gateway held the bytes for the tunnel): one that reads the body first
    stalled the request to the first-byte timeout, and one that answered 101 at once took the
    body, a request of the attacker's choosing, as WebSocket traffic."""
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, request_, wait=5)
    code, headers, body = parse(out)
    assert code == 400
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["detail"] == "a WebSocket upgrade is a GET request without a body"
    assert out.count(b"HTTP/1.1 ") == 1  # the body is never read as a request either
    assert seen == []


async def test_an_upgrade_in_an_http_1_0_request_is_ignored() -> None:
    """RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request. It was forwarded as
    an HTTP/1.1 upgrade, and the 101 tunnelled to a client that cannot have asked for it."""
    seen: list[dict[bytes, bytes]] = []
    async with backend(upgrading(seen)) as bport, gateway(config(bport)) as (gport, _):
        out = await raw_http(gport, b"GET" + WS_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n")
    assert parse(out)[0::2] == (200, b"ok")
    assert b"upgrade" not in seen[0]
    assert b"connection" not in seen[0]


async def test_an_endless_response_trailer_section_cuts_the_response() -> None:
    """Trailers are dropped, but httptools still joined an endless trailer value piece by piece
    on the event loop (1-2 s stalls for every client, +100 MB) until the total timeout. Now the
    bytes that follow the last body bytes are bounded like a head: past 64 KiB the response is
    cut (no last chunk, the connection closed), so the client knows it is incomplete."""
    cfg = config(0, timeouts={"total": "120s"})
    async with backend(
        endless_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: ", b"a")
    ) as bport:
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, _):
            r, w = await asyncio.open_connection("127.0.0.1", gport)
            w.write(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
            out = b""
            async with asyncio.timeout(20):  # generous: the cut comes after ~64 KiB from loopback
                while chunk := await r.read(65536):
                    out += chunk
            w.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"2\r\nok\r\n"  # no last chunk: the client sees the response was cut
