"""The HTTPS listener from outside, over real sockets: what it serves (HTTP/1.1 by ALPN, the
certificate SNI names, resumed sessions, HSTS) and what it refuses (plaintext, TLS 1.0/1.1,
weak ciphers, compression) — the refusals with hand-written ClientHellos, which no modern client
library would still send."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from tls_helpers import (
    GOOD_CIPHER,
    TLS10,
    TLS11,
    TLS12,
    WEAK_CIPHERS,
    HttpsClient,
    Pki,
    client_hello,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    https_get,
    refused_handshake,
    send_hello,
    serving,
    tls_config,
    write_config,
)

from edgeway.gateway.process.serve import GatewayServer


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def three_certificates(pki: Pki, **tls: Any) -> dict[str, Any]:
    return {"certificates": [pki.loopback.entry(), pki.api.entry(), pki.wildcard.entry()], **tls}


async def start(tmp_path: Path, pki: Pki, **tls: Any) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, three_certificates(pki, **tls)))
        async with serving(path) as server:
            yield server


@pytest.fixture
async def gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    async for server in start(tmp_path, pki, hsts={"max_age": "1d", "include_subdomains": True}):
        yield server


async def test_serves_http_1_1_over_tls_and_tells_the_service_it_was_https(
    gateway: GatewayServer, pki: Pki
) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # the gateway process's loop
    client = await HttpsClient.connect(gateway.port, pki.client_context())
    try:
        assert client.ssl_object.selected_alpn_protocol() == "http/1.1"
        assert client.ssl_object.version() == "TLSv1.3"
        first = await client.request("GET", "/a")
        second = await client.request("GET", "/b")  # the same connection: keep-alive over TLS
    finally:
        await client.close()
    assert first.status == second.status == 200
    seen = first.json()["headers"]
    assert seen["x-forwarded-proto"] == "https"
    assert second.json()["line"] == "GET /b HTTP/1.1"


async def test_alpn_picks_http_1_1_among_what_the_client_offers(gateway: GatewayServer, pki: Pki) -> None:
    ctx = pki.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = await HttpsClient.connect(gateway.port, ctx)
    try:
        assert client.ssl_object.selected_alpn_protocol() == "http/1.1"
        assert (await client.request("GET", "/")).status == 200
    finally:
        await client.close()
    ctx = pki.client_context()
    ctx.set_alpn_protocols([])  # no ALPN at all (curl --no-alpn, older clients): HTTP/1.1
    reply, _ = await https_get(gateway.port, ctx)
    assert reply.status == 200


async def test_every_response_carries_hsts(gateway: GatewayServer, pki: Pki) -> None:
    proxied, _ = await https_get(gateway.port, pki.client_context(), "/anything")
    assert proxied.headers["strict-transport-security"] == "max-age=86400; includeSubDomains"
    client = await HttpsClient.connect(gateway.port, pki.client_context())
    try:  # a problem the gateway answers itself, too (no route for this method would be a 405)
        bad = await client.request("GET", "/%2e%2e/etc")
    finally:
        await client.close()
    assert bad.status == 400
    assert bad.headers["strict-transport-security"] == "max-age=86400; includeSubDomains"


async def test_a_client_that_never_finishes_its_handshake_is_cut_off(tmp_path: Path, pki: Pki) -> None:
    # A handshake gets as long as a request head (limits.header_read_timeout), not asyncio's
    # default minute: idle and half-open TLS connections cannot pile up.
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        config = tls_config(port, three_certificates(pki), limits={"header_read_timeout": "300ms"})
        write_config(path, config)
        async with serving(path) as server:
            for opening in (b"", client_hello(TLS12, [GOOD_CIPHER])[:40]):  # nothing; half a hello
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(opening)
                async with asyncio.timeout(5):
                    assert await r.read() == b""
                w.close()


async def test_plaintext_http_on_the_tls_port_gets_no_http_answer(gateway: GatewayServer, pki: Pki) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", gateway.port)
    w.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    async with asyncio.timeout(10):
        data = await r.read()
    w.close()
    assert not data.startswith(b"HTTP/"), data
    assert data == b"" or data[0] == 0x15  # closed, or a TLS alert record
    # ... and the listener is unharmed.
    reply, _ = await https_get(gateway.port, pki.client_context())
    assert reply.status == 200


@pytest.mark.parametrize("version", [TLS10, TLS11], ids=["TLS 1.0", "TLS 1.1"])
async def test_tls_before_1_2_is_refused(gateway: GatewayServer, version: int) -> None:
    answer = await send_hello(gateway.port, client_hello(version, [GOOD_CIPHER, 0xC009, 0x002F]))
    assert answer.record_type in (0x15, None), answer
    if answer.record_type == 0x15:
        assert answer.alert == 70  # protocol_version


async def test_a_tls_1_2_hello_with_a_modern_cipher_is_answered(gateway: GatewayServer) -> None:
    # The control for the refusals: the same hand-written hello, with a cipher the gateway serves.
    answer = await send_hello(gateway.port, client_hello(TLS12, [GOOD_CIPHER]))
    assert answer.record_type == 0x16
    assert (answer.server_version, answer.cipher, answer.compression) == (TLS12, GOOD_CIPHER, 0)


@pytest.mark.parametrize("cipher", list(WEAK_CIPHERS.values()), ids=list(WEAK_CIPHERS))
async def test_weak_ciphers_are_refused(gateway: GatewayServer, cipher: int) -> None:
    answer = await send_hello(gateway.port, client_hello(TLS12, [cipher]))
    assert answer.record_type in (0x15, None), answer
    if answer.record_type == 0x15:
        assert answer.alert == 40  # handshake_failure: no cipher in common


async def test_compression_is_never_chosen(gateway: GatewayServer) -> None:
    answer = await send_hello(gateway.port, client_hello(TLS12, [GOOD_CIPHER], compression=b"\x01\x00"))
    assert answer.compression == 0  # null: DEFLATE (1) was offered first and declined


async def test_a_python_client_limited_to_weak_ciphers_cannot_connect(
    gateway: GatewayServer, pki: Pki
) -> None:
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-SHA:ECDHE-ECDSA-AES128-SHA")
    await refused_handshake(gateway.port, ctx)


@pytest.mark.parametrize(
    ("server_name", "served"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM.", "api.example.com"),  # SNI compares like DNS: case and the root dot
        ("shop.apps.example.com", "*.apps.example.com"),
        ("a.b.apps.example.com", "localhost"),  # a wildcard stands for one label only
        ("apps.example.com", "localhost"),
        ("unknown.example.org", "localhost"),  # an unknown name gets the default (the first)
        ("localhost", "localhost"),
    ],
)
async def test_sni_chooses_the_certificate(
    gateway: GatewayServer, pki: Pki, server_name: str, served: str
) -> None:
    ctx = pki.client_context()
    ctx.check_hostname = False  # the test reads the names served instead
    _, names = await https_get(gateway.port, ctx, server_hostname=server_name)
    assert served in names
    assert len(names) == (3 if served == "localhost" else 1)


async def test_a_client_without_sni_gets_the_default(gateway: GatewayServer, pki: Pki) -> None:
    # Connecting to an IP address sends no SNI (RFC 6066): the default certificate names it.
    reply, names = await https_get(gateway.port, pki.client_context(), server_hostname="127.0.0.1")
    assert reply.status == 200
    assert "127.0.0.1" in names


def _handshake(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while tls.recv(65536):  # to the end: TLS 1.3 tickets arrive after the handshake
            pass
        reused, got = tls.session_reused, tls.session
    assert got is not None
    return bool(reused), got


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_sessions_resume(gateway: GatewayServer, pki: Pki, version: ssl.TLSVersion) -> None:
    ctx = pki.client_context()
    ctx.minimum_version = ctx.maximum_version = version
    first_reused, session = await asyncio.to_thread(_handshake, gateway.port, ctx, None)
    reused, _ = await asyncio.to_thread(_handshake, gateway.port, ctx, session)
    assert (first_reused, reused) == (False, True)


async def test_min_version_1_3_refuses_tls_1_2(tmp_path: Path, pki: Pki) -> None:
    async for server in start(tmp_path, pki, min_version="1.3"):
        ctx = pki.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        await refused_handshake(server.port, ctx)
        reply, _ = await https_get(server.port, pki.client_context())
        assert reply.status == 200


async def test_without_tickets_tls_1_2_still_resumes_from_the_session_cache(tmp_path: Path, pki: Pki) -> None:
    async for server in start(tmp_path, pki, session_tickets=False):
        ctx = pki.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET
        _, session = await asyncio.to_thread(_handshake, server.port, ctx, None)
        assert not session.has_ticket
        reused, _ = await asyncio.to_thread(_handshake, server.port, ctx, session)
        assert reused
