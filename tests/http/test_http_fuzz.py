"""Arbitrary bytes and fragmentations: the server never crashes, never hangs, and a handler only
ever sees requests that parse as well-formed HTTP/1.1."""

from __future__ import annotations

import asyncio

from engine_helpers import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits

VALID = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
PIECES = [
    b"GET ",
    b"POST ",
    b"/x",
    b"/../",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"Host: a\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    b"Expect: 100-continue\r\n",
    b"X: \x00\r\n",
    b" folded\r\n",
    b"\r\n",
    b"\n",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"zz\r\n",
    b"abc",
]

messages = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=12).map(b"".join)
cuts = st.lists(st.integers(min_value=1, max_value=64), max_size=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=messages, fragments=cuts)
def test_arbitrary_bytes_never_crash_hang_or_reach_the_handler_malformed(
    data: bytes, fragments: list[int]
) -> None:
    asyncio.run(_exercise(data, fragments))


async def _exercise(data: bytes, fragments: list[int]) -> None:
    seen: list[Exchange] = []

    async def handler(ex: Exchange) -> None:
        body = await ex.body.read_all(1 << 16)
        # Whatever reached us is a complete, well-formed request.
        assert ex.method.isalpha()
        assert ex.path.startswith(b"/") or ex.path == b"*"
        assert b"\r" not in ex.target
        assert b"\n" not in ex.target
        for name, value in ex.headers:
            assert b"\x00" not in value
            assert b"\r" not in value
            assert b"\n" not in name
        seen.append(ex)
        ex.respond(200, [], b"ok:%d" % len(body))

    async with serving(handler, ServerLimits(header_read_timeout=0.5, keepalive_timeout=0.5)) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        pos = 0
        for n in fragments:
            w.write(data[pos : pos + n])
            pos += n
            await asyncio.sleep(0)
        w.write(data[pos:])
        try:
            async with asyncio.timeout(3):
                while await r.read(65536):
                    pass
        except (ConnectionResetError, TimeoutError):
            pass
        w.close()
        # The server still answers a fresh, valid request: nothing got wedged.
        r2, w2 = await asyncio.open_connection("127.0.0.1", srv.port)
        w2.write(VALID)
        async with asyncio.timeout(3):
            head = await r2.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        w2.close()
