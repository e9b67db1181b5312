"""The edge security metrics on the admin port's /metrics, moved by real traffic: refusals by route,
status and reason; rate-limit decisions made without the store (Redis pointed at a closed port);
JWKS refreshes and their failures (the JWKS server answering 503)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from edge_helpers import (
    AUDIENCE,
    ISSUER,
    auth_block,
    edge,
    edge_config,
    eventually,
    issuer_for,
    jwks_server,
    recording_backend,
)

from conftest import dead_port
from edgeway.security.keys import KeyRing
from edgeway.security.tokens import TokenIssuer

REJECTIONS = "edgeway_gateway_rejections_total"
UNAVAILABLE = "edgeway_gateway_ratelimit_store_unavailable_total"
JWKS = "edgeway_gateway_jwks_refreshes_total"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_refusals_are_counted_by_route_status_and_reason() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    expired = TokenIssuer(ring, ISSUER, AUDIENCE, clock=lambda: time.time() - 3600).issue("alice").token
    routes = [
        {"id": "admin", "match": {"path": "/admin/**"}, "auth": {"roles": ["admin"]}},
        {
            "id": "limited",
            "match": {"path": "/limited/**"},
            "auth": {},
            "rate_limit": {"rate": 1, "per": "1m"},
        },
    ]
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, routes, auth_block(jwks.url))
        async with edge(cfg) as gw, httpx.AsyncClient() as http:
            user = issuer.issue("alice", roles=["customer"]).token
            statuses = [
                (await http.get(gw.url("/admin/x"))).status_code,
                (await http.get(gw.url("/admin/x"), headers=bearer(expired))).status_code,
                (await http.get(gw.url("/admin/x"), headers=bearer(user))).status_code,
                (await http.get(gw.url("/limited/x"), headers=bearer(user))).status_code,
                (await http.get(gw.url("/limited/x"), headers=bearer(user))).status_code,
                (await http.get(gw.url("/limited/x"), headers=bearer(user))).status_code,
            ]
            counted = {
                (route, status, reason): await gw.metric(
                    http, REJECTIONS, route=route, status=status, reason=reason
                )
                for route, status, reason in [
                    ("admin", "401", "missing"),
                    ("admin", "401", "expired"),
                    ("admin", "403", "insufficient_role"),
                    ("limited", "429", "rate_limited"),
                ]
            }
    assert statuses == [401, 401, 403, 200, 429, 429]
    assert counted == {
        ("admin", "401", "missing"): 1.0,
        ("admin", "401", "expired"): 1.0,
        ("admin", "403", "insufficient_role"): 1.0,
        ("limited", "429", "rate_limited"): 2.0,
    }
    assert len(seen.requests) == 1


@pytest.mark.parametrize(
    ("on_store_error", "status", "outcome"), [("allow", 200, "allowed"), ("deny", 503, "refused")]
)
async def test_decisions_made_without_the_rate_limit_store_are_counted(
    on_store_error: str, status: int, outcome: str
) -> None:
    store: dict[str, Any] = {
        "backend": "redis",
        "redis_url": f"redis://127.0.0.1:{dead_port()}/0",  # nothing listens there
        "timeout": "100ms",
        "on_store_error": on_store_error,
    }
    routes = [{"id": "limited", "match": {"path": "/api/**"}, "rate_limit": {"rate": 100}}]
    async with (
        recording_backend() as (port, _),
        edge(edge_config(port, routes, rate_limits=store)) as gw,
        httpx.AsyncClient() as http,
    ):
        statuses = [(await http.get(gw.url("/api/x"))).status_code for _ in range(3)]
        unavailable = await gw.metric(http, UNAVAILABLE, route="limited", outcome=outcome)
        refused = await gw.metric(
            http, REJECTIONS, route="limited", status="503", reason="rate_limit_store_unavailable"
        )
        problem = (await http.get(gw.url("/api/x"))).json() if status == 503 else {}
    assert statuses == [status] * 3
    assert unavailable == 3.0
    assert refused == (3.0 if status == 503 else 0.0)
    if status == 503:
        assert problem["reason"] == "rate_limit_store_unavailable"


async def test_jwks_refreshes_and_their_failures_are_counted() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice").token
    async with recording_backend() as (port, _), jwks_server(ring) as jwks:
        cfg = edge_config(
            port,
            [{"match": {"path": "/**"}, "auth": {}}],
            auth_block(jwks.url, jwks_refresh_interval="100ms"),
        )
        async with edge(cfg) as gw, httpx.AsyncClient() as http:
            at_start = await gw.metric(http, JWKS, result="ok")
            jwks.available = False

            async def failed() -> bool:
                return await gw.metric(http, JWKS, result="failed") >= 2

            await eventually(failed)
            _, during = await gw.readyz(http)
            served_stale = (await http.get(gw.url("/x"), headers=bearer(token))).status_code
            ok_during = await gw.metric(http, JWKS, result="ok")
            jwks.available = True

            async def recovered() -> bool:
                return await gw.metric(http, JWKS, result="ok") > ok_during

            await eventually(recovered)
            _, after = await gw.readyz(http)
    assert at_start >= 1.0  # the fetch at start (and scheduled ones since, on a slow machine)
    assert during["auth"]["jwks"]["stale"] is True
    assert "503" in during["auth"]["jwks"]["last_error"]
    assert served_stale == 200  # the cached keys are served through the outage
    assert after["auth"]["jwks"] == {"keys": 1, "stale": False, "last_error": None}
