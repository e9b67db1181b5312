"""The cache and push behind the real auth filter: JWTs from the security library, verified by
the gateway against a JWKS served over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from cache_push_helpers import Reply, http, running_backend, running_gateway
from edge_helpers import auth_block, issuer_for, jwks_server
from push_helpers import hub

from edgeway.security.keys import KeyRing


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_cached_responses_of_an_authenticated_route_are_per_user() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    alice, bob = issuer.issue("alice").token, issuer.issue("bob").token

    async def whoami(line: bytes, headers: dict[bytes, bytes]) -> Reply:
        return 200, [(b"content-type", b"application/json")], b'{"me": "%s"}' % headers[b"x-edgeway-subject"]

    async with running_backend(whoami) as b, jwks_server(ring) as jwks:
        cfg: dict[str, Any] = {
            "services": {"b": {"instances": [f"http://127.0.0.1:{b.port}"]}},
            "auth": auth_block(jwks.url),
            "routes": [
                {
                    "id": "me",
                    "match": {"path": "/me"},
                    "auth": {},
                    "proxy": {"service": "b"},
                    "cache": {"ttl": "1m"},
                }
            ],
        }
        async with running_gateway(cfg) as g:
            first = await http(g.port, "GET", "/me", bearer(alice))
            other = await http(g.port, "GET", "/me", bearer(bob))
            again = await http(g.port, "GET", "/me", bearer(alice))
            anonymous = await http(g.port, "GET", "/me")
    assert (first[2], other[2]) == (b'{"me": "alice"}', b'{"me": "bob"}')
    assert (again[1]["x-cache"], again[2]) == ("HIT", b'{"me": "alice"}')
    assert anonymous[0] == 401  # refused by auth before the cache is consulted
    assert b.count() == 2


async def test_push_with_a_token_in_the_query_and_messages_for_their_owner_only() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    async with jwks_server(ring) as jwks:
        cfg: dict[str, Any] = {
            "auth": auth_block(jwks.url),
            "routes": [
                {
                    "id": "push",
                    "match": {"path": "/push"},
                    "auth": {"allow_query_token": True},
                    "push": {"topics": [{"pattern": "jobs/{id}", "allow": "owner", "owner_field": "owner"}]},
                }
            ],
        }
        async with running_gateway(cfg) as g:
            url = f"ws://127.0.0.1:{g.port}/push?topic=jobs/1&access_token="
            with_short_token = url + issuer.issue("carol", ttl=1.0).token
            async with (
                websockets.connect(url + issuer.issue("alice").token, ping_interval=None) as alice,
                websockets.connect(url + issuer.issue("bob").token, ping_interval=None) as bob,
                websockets.connect(with_short_token, ping_interval=None) as carol,
            ):
                for ws in (alice, bob, carol):
                    assert json.loads(await ws.recv()) == {"type": "subscribed", "topic": "jobs/1"}
                hub(g).publish("jobs/1", {"owner": "alice", "step": 1})
                hub(g).publish("jobs/1", {"owner": "bob", "step": 2})
                got_alice = json.loads(await asyncio.wait_for(alice.recv(), 3))
                got_bob = json.loads(await asyncio.wait_for(bob.recv(), 3))
                try:
                    await asyncio.wait_for(carol.recv(), 5)
                    closed = None
                except websockets.ConnectionClosed as exc:
                    closed = exc.rcvd
            try:
                async with websockets.connect(url.rsplit("&", 1)[0], ping_interval=None):
                    refused = None
            except websockets.InvalidStatus as exc:
                refused = exc.response.status_code
    assert (got_alice["data"]["step"], got_bob["data"]["step"]) == (1, 2)
    assert closed is not None
    assert (closed.code, closed.reason) == (1008, "token expired")
    assert refused == 401
