"""HTTP/2 through a gateway process: h2c with prior knowledge and ALPN h2 over TLS reach the same
routes as HTTP/1.1, proxied to an HTTP/1.1 service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from h2_client import H2Client
from h2_gateway import Certificates, echo_backend, gateway_config, serving

from edgeway.gateway.process.serve import GatewayServer


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """The loop a gateway process runs on (serve installs uvloop)."""
    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


@pytest.fixture
async def h2c_gateway(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port, serving(tmp_path, gateway_config(port)) as server:
        yield server


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path / "pki")


@pytest.fixture
async def tls_gateway(tmp_path: Path, certificates: Certificates) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port, serving(tmp_path, gateway_config(port, tls=certificates)) as server:
        yield server


async def test_h2c_with_prior_knowledge_proxies_a_get(h2c_gateway: GatewayServer) -> None:
    client = await H2Client.connect(h2c_gateway.port)
    try:
        reply = await client.request("GET", "/items?x=1", [("accept", "application/json")])
    finally:
        await client.close()
    assert reply.status == 200
    assert reply.headers["x-backend"] == "yes"  # the service's header, lower-cased for HTTP/2
    assert "x-request-id" in reply.headers
    seen = json.loads(reply.body)
    assert seen["line"] == "GET /items?x=1 HTTP/1.1"  # upstream stays HTTP/1.1
    assert seen["headers"]["host"].startswith("127.0.0.1:")  # the service's own authority
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == "localhost"
    assert seen["headers"]["accept"] == "application/json"


async def test_tls_alpn_h2_proxies_a_get_and_http_1_1_still_works(
    tls_gateway: GatewayServer, certificates: Certificates
) -> None:
    client = await H2Client.connect(tls_gateway.port, certificates.client_context(["h2", "http/1.1"]))
    try:
        assert client.alpn() == "h2"
        reply = await client.request("GET", "/a", [("x-test", "1")])
    finally:
        await client.close()
    assert reply.status == 200
    seen = json.loads(reply.body)
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-test"] == "1"
    # A client that offers only HTTP/1.1 gets it, as before.
    r, w = await asyncio.open_connection(
        "127.0.0.1",
        tls_gateway.port,
        ssl=certificates.client_context(["http/1.1"]),
        server_hostname="localhost",
    )
    w.write(b"GET /b HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    w.close()


async def test_many_streams_on_one_connection_with_bodies(h2c_gateway: GatewayServer) -> None:
    client = await H2Client.connect(h2c_gateway.port)
    try:
        ids = [client.send_request("POST", f"/p/{i}", body=b"b%d" % i) for i in range(50)]
        replies = [await client.response(i) for i in ids]
    finally:
        await client.close()
    for i, reply in enumerate(replies):
        assert reply.status == 200
        seen = json.loads(reply.body)
        assert seen["line"] == f"POST /p/{i} HTTP/1.1"
        assert seen["body"] == f"b{i}"


async def test_a_large_response_respects_flow_control(h2c_gateway: GatewayServer) -> None:
    client = await H2Client.connect(h2c_gateway.port)
    try:
        reply = await client.request("GET", "/big")
    finally:
        await client.close()
    assert reply.status == 200
    assert len(reply.body) == 1024 * 1024  # 16 windows of 64 KiB, each given back by the client


async def test_without_http2_the_preface_is_not_served(tmp_path: Path) -> None:
    async with echo_backend() as port, serving(tmp_path, gateway_config(port, http2=False)) as server:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        answer = await asyncio.wait_for(r.read(4096), 5)
        w.close()
    assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5"))


async def test_filters_and_errors_act_on_http2_requests_as_on_http_1_1(tmp_path: Path) -> None:
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": "/limited/**"},
            "proxy": {"service": "echo"},
            "rate_limit": {"rate": 2, "per": "1h", "key": "ip"},
        },
        {"match": {"path": "/open/**"}, "proxy": {"service": "echo"}},
    ]
    async with echo_backend() as port, serving(tmp_path, gateway_config(port, routes=routes)) as server:
        client = await H2Client.connect(server.port)
        try:
            limited = [await client.request("GET", "/limited/x") for _ in range(3)]
            missing = await client.request("GET", "/nowhere")
            posted = await client.request("POST", "/open/y", [("content-type", "text/plain")], b"payload")
        finally:
            await client.close()
    assert [r.status for r in limited] == [200, 200, 429]
    assert limited[2].headers["content-type"] == "application/problem+json"
    assert missing.status == 404
    assert json.loads(missing.body)["status"] == 404
    assert json.loads(posted.body)["body"] == "payload"
