"""CORS at the edge with real preflight and actual requests, as a browser sends them."""

from __future__ import annotations

from typing import Any

import pytest
from edge_helpers import auth_block, edge_config, gateway, jwks_server, recording_backend, request

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.security.keys import KeyRing

APP = "https://app.example.com"


def preflight(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        out["Access-Control-Request-Headers"] = headers
    return out


CORS = {
    "allow_origins": [APP, "https://*.shop.test"],
    "allow_methods": ["GET", "POST", "DELETE"],
    "allow_headers": ["Content-Type", "X-Client-Version"],
    "expose_headers": ["X-Request-ID", "RateLimit-Remaining"],
    "allow_credentials": True,
    "max_age": "10m",
}


async def test_preflight_is_answered_at_the_edge_before_auth_and_never_forwarded() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [{"match": {"path": "/orders/**", "methods": ["GET", "POST"]}, "auth": {}, "cors": CORS}]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            status, headers, body = await request(
                gw, "OPTIONS", "/orders/1", preflight(APP, "POST", "content-type, x-client-version")
            )
    assert status == 204
    assert body == b""
    assert headers["access-control-allow-origin"] == [APP]
    assert headers["access-control-allow-credentials"] == ["true"]
    assert headers["access-control-allow-methods"] == ["GET, POST, DELETE"]
    assert headers["access-control-allow-headers"] == ["Content-Type, X-Client-Version"]
    assert headers["access-control-max-age"] == ["600"]
    assert "Origin" in headers["vary"][0]
    assert seen.requests == []


@pytest.mark.parametrize(
    ("origin", "method", "asked_headers", "allowed"),
    [
        ("https://evil.example.com", "POST", None, False),
        ("https://app.example.com.evil.test", "POST", None, False),
        ("http://app.example.com", "POST", None, False),  # another scheme is another origin
        ("https://eu.shop.test", "POST", None, True),
        ("https://a.b.shop.test", "GET", None, True),
        ("https://shop.test", "GET", None, False),  # the wildcard needs a label
        ("https://evilshop.test", "GET", None, False),
        (APP, "PUT", None, False),
        (APP, "POST", "x-secret", False),
        (APP, "POST", "accept-language", True),
    ],
)
async def test_preflight_decisions(
    origin: str, method: str, asked_headers: str | None, allowed: bool
) -> None:
    async with recording_backend() as (port, seen):
        cfg = edge_config(port, [{"match": {"path": "/api/**"}}], cors=CORS)
        async with gateway(cfg) as (gw, _):
            status, headers, body = await request(
                gw, "OPTIONS", "/api/x", preflight(origin, method, asked_headers)
            )
    assert seen.requests == []
    if allowed:
        assert status == 204
        assert headers["access-control-allow-origin"] == [origin]
    else:
        assert status == 403
        assert not [name for name in headers if name.startswith("access-control-")]
        assert b"not allowed" in body


async def test_actual_requests_get_cors_headers_only_for_allowed_origins_even_on_errors() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [{"match": {"path": "/orders/**"}, "auth": {}}, {"match": {"path": "/public/**"}}]
        async with gateway(edge_config(port, routes, auth_block(jwks.url), cors=CORS)) as (gw, _):
            ok = await request(gw, "GET", "/public/x", {"Origin": APP})
            denied = await request(gw, "GET", "/orders/1", {"Origin": APP})
            foreign = await request(gw, "GET", "/public/x", {"Origin": "https://evil.test"})
            plain = await request(gw, "GET", "/public/x")
    status, headers, _ = ok
    assert status == 200
    assert headers["access-control-allow-origin"] == [APP]
    assert headers["access-control-allow-credentials"] == ["true"]
    assert headers["access-control-expose-headers"] == ["X-Request-ID, RateLimit-Remaining"]
    assert headers["vary"] == ["Origin"]
    # The 401 carries CORS headers too, so the page can read why it was refused.
    assert denied[0] == 401
    assert denied[1]["access-control-allow-origin"] == [APP]
    # Another origin is served (the browser withholds it) but gets no CORS headers.
    assert foreign[0] == 200
    assert not [name for name in foreign[1] if name.startswith("access-control-")]
    assert foreign[1]["vary"] == ["Origin"]
    assert plain[1]["vary"] == ["Origin"]
    assert len(seen.requests) == 3


async def test_route_rule_overrides_the_gateway_and_can_turn_it_off() -> None:
    async with recording_backend() as (port, _seen):
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/partner/**"}, "cors": {"allow_origins": ["https://partner.test"]}},
            {"match": {"path": "/internal/**"}, "cors": {"enabled": False}},
            {"match": {"path": "/**"}},
        ]
        async with gateway(edge_config(port, routes, cors=CORS)) as (gw, _):
            partner_app = await request(gw, "OPTIONS", "/partner/x", preflight(APP, "GET"))
            partner = await request(gw, "OPTIONS", "/partner/x", preflight("https://partner.test", "GET"))
            internal = await request(gw, "GET", "/internal/x", {"Origin": APP})
            other = await request(gw, "GET", "/x", {"Origin": APP})
    assert partner_app[0] == 403
    assert partner[0] == 204
    assert "access-control-allow-credentials" not in partner[1]  # the route's rule, not the gateway's
    assert internal[0] == 200
    assert "access-control-allow-origin" not in internal[1]
    assert other[1]["access-control-allow-origin"] == [APP]


async def test_any_origin_without_credentials_answers_star_and_does_not_vary() -> None:
    async with recording_backend() as (port, _):
        rule = {"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"], "max_age": None}
        async with gateway(edge_config(port, [{"match": {"path": "/**"}}], cors=rule)) as (gw, _):
            pre = await request(gw, "OPTIONS", "/x", preflight("https://any.test", "PATCH", "x-a, x-b"))
            actual = await request(gw, "GET", "/x", {"Origin": "https://any.test"})
    assert pre[0] == 204
    assert pre[1]["access-control-allow-origin"] == ["*"]
    assert pre[1]["access-control-allow-methods"] == ["PATCH"]
    assert pre[1]["access-control-allow-headers"] == ["x-a, x-b"]
    assert "access-control-max-age" not in pre[1]
    assert actual[1]["access-control-allow-origin"] == ["*"]
    assert "vary" not in actual[1]


async def test_a_preflight_to_a_route_without_cors_is_still_a_405() -> None:
    async with recording_backend() as (port, seen):
        routes = [{"match": {"path": "/x", "methods": ["GET"]}}]
        async with gateway(edge_config(port, routes)) as (gw, _):
            status, headers, _ = await request(gw, "OPTIONS", "/x", preflight(APP, "GET"))
    assert status == 405
    assert headers["allow"] == ["GET"]
    assert seen.requests == []


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"allow_origins": ["*"], "allow_credentials": True}, "cannot be combined with allow_credentials"),
        ({"allow_origins": ["https://app.test/path"]}, "is not an origin"),
        ({"allow_origins": []}, "list at least one origin"),
    ],
)
def test_cors_config_mistakes(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(edge_config(1, [{"match": {"path": "/**"}, "cors": rule}]))
