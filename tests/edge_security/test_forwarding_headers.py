"""What a service learns about the client: every forwarding header follows one rule (dropped and
rewritten unless the peer is a trusted proxy), on the proxy's callback and task paths, WebSocket
upgrades and the calls of aggregates; and header names that are a protected name with ``_`` for
``-`` never reach a service."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from edge_helpers import (
    auth_block,
    edge_config,
    gateway,
    jwks_server,
    recording_backend,
    request,
)

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.gateway.filters.auth.identity_headers import HeaderScrubber
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS, Forwarding
from edgeway.security.keys import KeyRing

# What a client can claim about itself; a service reading any of these must not believe it.
CLAIMS = {
    "Forwarded": "for=10.9.9.9;proto=https;host=bank.example",
    "X-Forwarded-For": "10.9.9.9",
    "X-Forwarded-Host": "bank.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Real-IP": "10.9.9.9",
    "X-Client-IP": "10.9.9.9",
    "True-Client-IP": "10.9.9.9",
    "CF-Connecting-IP": "10.9.9.9",
    "X-Original-URL": "/admin/users",
}


def route_config(port: int, **top: Any) -> dict[str, Any]:
    return edge_config(port, [{"match": {"path": "/**"}}], **top)


# GET without a body goes the callback path (ProxyAction.start), a POST with a body the task path.
PATHS = [("GET", b""), ("POST", b'{"a":1}')]


@pytest.mark.parametrize(("method", "body"), PATHS)
async def test_an_untrusted_clients_forwarding_headers_are_replaced_by_the_gateways(
    method: str, body: bytes
) -> None:
    async with recording_backend() as (port, seen), gateway(route_config(port)) as (gw, _):
        status, _, _ = await request(gw, method, "/x", CLAIMS, body, host="shop.example")
    assert status == 200
    headers = seen.last_headers()
    assert headers[b"x-forwarded-for"] == b"127.0.0.1"
    assert headers[b"x-forwarded-host"] == b"shop.example"
    assert headers[b"x-forwarded-proto"] == b"http"
    for name in ("forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-client-ip"):
        assert name.encode() not in headers, name
    assert not {b"true-client-ip", b"cf-connecting-ip", b"x-original-url"} & set(headers)


@pytest.mark.parametrize(("method", "body"), PATHS)
async def test_a_trusted_proxys_forwarding_headers_are_kept_and_extended(method: str, body: bytes) -> None:
    cfg = route_config(0, trusted_proxies=["127.0.0.0/8"])
    async with recording_backend() as (port, seen):
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{port}"]
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(gw, method, "/x", CLAIMS, body, host="shop.example")
    assert status == 200
    headers = seen.last_headers()
    assert headers[b"x-forwarded-for"] == b"10.9.9.9, 127.0.0.1"
    assert headers[b"x-forwarded-host"] == b"bank.example"  # what the proxy in front saw
    assert headers[b"x-forwarded-proto"] == b"https"
    assert headers[b"x-real-ip"] == b"10.9.9.9"
    assert headers[b"x-forwarded-prefix"] == b"/admin"
    assert headers[b"forwarded"] == (
        b'for=10.9.9.9;proto=https;host=bank.example, for=127.0.0.1;proto=http;host="shop.example"'
    )


async def test_a_peer_outside_the_trusted_ranges_is_not_trusted() -> None:
    cfg = route_config(0, trusted_proxies=["10.0.0.0/8", "::1"])
    async with recording_backend() as (port, seen):
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{port}"]
        async with gateway(cfg) as (gw, _):
            await request(gw, "GET", "/x", CLAIMS, host="shop.example")
    headers = seen.last_headers()
    assert headers[b"x-forwarded-for"] == b"127.0.0.1"
    assert b"x-real-ip" not in headers


async def test_the_websocket_upgrade_request_follows_the_same_rule() -> None:
    cfg = edge_config(0, [{"match": {"path": "/ws"}, "proxy": {"service": "backend", "websocket": True}}])
    got: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"]
    try:
        async with gateway(cfg) as (gw, _):
            await request(
                gw,
                "GET",
                "/ws",
                {
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                    **CLAIMS,
                },
            )
    finally:
        server.close()
    head = got[0].lower()
    assert b"x-forwarded-for: 127.0.0.1\r\n" in head
    assert b"x-real-ip" not in head
    assert b"forwarded:" not in head.replace(b"x-forwarded", b"")


async def test_names_that_are_a_gateway_header_with_underscores_are_not_forwarded() -> None:
    async with recording_backend() as (port, seen), gateway(route_config(port)) as (gw, _):
        status, _, _ = await request(
            gw,
            "POST",
            "/x",
            body=b"12345",
            raw_headers=[
                ("Content_Length", "0"),
                ("Transfer_Encoding", "chunked"),
                ("X_Forwarded_For", "10.9.9.9"),
                ("X_Real_IP", "10.9.9.9"),
                ("X_Request_ID", "forged"),
                ("X_Custom_Thing", "kept"),
            ],
        )
    assert status == 200
    headers = seen.last_headers()
    assert not {b"content_length", b"transfer_encoding", b"x_forwarded_for", b"x_real_ip"} & set(headers)
    assert b"x_request_id" not in headers
    assert headers[b"x_custom_thing"] == b"kept"  # only aliases of protected names go
    assert seen.requests[-1][2] == b"12345"


async def test_identity_headers_spelt_with_underscores_are_stripped() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(
                gw, "GET", "/x", {"X_Edgeway_Subject": "root", "x_edgeway_roles": "admin", "X_User_Id": "1"}
            )
    assert status == 200
    assert not {b"x_edgeway_subject", b"x_edgeway_roles", b"x_user_id"} & set(seen.last_headers())


def test_the_scrubber_reads_underscores_as_dashes_in_configured_names_too() -> None:
    scrub = HeaderScrubber(["X-Internal-"], ["X_Tenant"])
    headers = [(b"X_Internal_Flag", b"1"), (b"x-tenant", b"t"), (b"X_TENANT", b"t"), (b"X-Ok", b"1")]
    assert scrub(headers) == [(b"X-Ok", b"1")]
    clean = [(b"X-Ok", b"1")]
    assert scrub(clean) is clean  # nothing stripped: nothing allocated


async def test_aggregate_calls_follow_the_same_rule() -> None:
    async with recording_backend() as (port, seen):
        cfg = {
            "name": "agg",
            "services": {"backend": {"instances": [f"http://127.0.0.1:{port}"]}},
            "routes": [
                {
                    "match": {"path": "/screen"},
                    "aggregate": {"calls": {"a": {"service": "backend", "path": "/a"}}},
                }
            ],
        }
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(gw, "GET", "/screen", CLAIMS, host="shop.example")
    assert status == 200
    headers = seen.last_headers()
    assert headers[b"x-forwarded-for"] == b"127.0.0.1"
    assert headers[b"x-forwarded-host"] == b"shop.example"
    assert b"x-real-ip" not in headers
    assert b"forwarded" not in headers


def test_forwarding_headers_cannot_be_copied_into_calls() -> None:
    cfg = {
        "services": {"backend": {"instances": ["http://127.0.0.1:1"]}},
        "routes": [
            {
                "match": {"path": "/screen"},
                "aggregate": {
                    "calls": {"a": {"service": "backend", "path": "/a", "forward_headers": ["X-Real-IP"]}}
                },
            }
        ],
    }
    with pytest.raises(ConfigError, match="X-Real-IP"):
        validate_config(cfg)


def test_trusted_proxies_are_checked_when_loading() -> None:
    with pytest.raises(ConfigError, match="not an IP address or CIDR"):
        validate_config({"trusted_proxies": ["10.0.0.0/33"]})


def test_the_client_address_behind_trusted_proxies() -> None:
    forwarding = Forwarding(["10.0.0.0/8"])

    class Ex:
        client = "10.0.0.2"
        headers = [(b"X-Forwarded-For", b"6.6.6.6, 203.0.113.5, 10.0.0.7")]

    # The rightmost address no trusted proxy vouches for; what it claimed further left is ignored.
    assert forwarding.client_address(Ex()) == "203.0.113.5"  # type: ignore[arg-type]
    Ex.client = "203.0.113.9"
    assert forwarding.client_address(Ex()) == "203.0.113.9"  # type: ignore[arg-type]
    assert forwarding.trusts("::ffff:10.1.2.3")
    assert not forwarding.trusts("unix-socket")
    assert b"x-real-ip" in FORWARDING_HEADERS


@pytest.mark.parametrize(("trusted", "second"), [([], 429), (["127.0.0.0/8"], 200)])
async def test_the_ip_rate_limit_key_follows_trusted_proxies(trusted: list[str], second: int) -> None:
    routes = [{"match": {"path": "/**"}, "rate_limit": {"rate": 1, "per": "1h", "key": "ip"}}]
    async with recording_backend() as (port, _):
        cfg = edge_config(port, routes, trusted_proxies=trusted)
        async with gateway(cfg) as (gw, _):
            first = await request(gw, "GET", "/x", {"X-Forwarded-For": "203.0.113.1"})
            other = await request(gw, "GET", "/x", {"X-Forwarded-For": "203.0.113.2"})
    assert first[0] == 200
    # Untrusted peer: one client whatever it claims. Behind a trusted proxy: two clients.
    assert other[0] == second
