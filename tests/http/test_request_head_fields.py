"""Request head fields the engine refuses before any handler sees them: a Host that is not an
RFC 9110 host (it would be copied into X-Forwarded-Host and matched against route hosts), and a
second Authorization or Content-Type (the gateway and the service could each act on another)."""

from __future__ import annotations

import asyncio

import pytest
from engine_helpers import echo, serving

from conftest import raw_http as raw


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"a b",
        b"evil.test/admin",
        b"evil.test?x",
        b"evil.test#x",
        b'a"b',
        b"<script>",
        b"a\\b",
        b"user@evil.test",
        b"a:80:90",
        b"a:port",
        b"[::1",
        b"a%zz",
        b"\xc3\xa9.test",
    ],
)
async def test_an_invalid_host_is_refused_with_400(host: bytes) -> None:
    async with serving(echo) as srv:
        out = await raw(srv.port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", wait=1.0)
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"application/problem+json" in out
    assert b"connection: close" in out


@pytest.mark.parametrize(
    "host",
    [
        b"shop.example",
        b"shop.example:8080",
        b"127.0.0.1:80",
        b"[::1]:8443",
        b"[v1.x]",
        b"xn--bcher-kva.example",
        b"a%41",
    ],
)
async def test_valid_hosts_are_served(host: bytes) -> None:
    async with serving(echo) as srv:
        out = await raw(srv.port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out


async def test_each_request_on_a_connection_has_its_host_checked() -> None:
    async with serving(echo) as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2)
        await r.readexactly(int(first.split(b"content-length: ")[1].split(b"\r\n")[0]))
        w.write(b"GET /2 HTTP/1.1\r\nHost: a b\r\n\r\n")
        second = await asyncio.wait_for(r.read(), 2)
        w.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("name", [b"Authorization", b"Content-Type"])
async def test_a_second_authorization_or_content_type_is_refused(name: bytes) -> None:
    async with serving(echo) as srv:
        out = await raw(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\n"
            + name
            + b": Bearer a\r\nContent-Length: 0\r\nX-Other: 1\r\n"
            + name.lower()
            + b": Bearer b\r\n\r\n",
            wait=1.0,
        )
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"more than one " + name.lower() in out.lower()


async def test_one_of_each_is_fine() -> None:
    async with serving(echo) as srv:
        out = await raw(
            srv.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
    assert out.startswith(b"HTTP/1.1 200"), out
