"""The cache and push behind the real auth filter: JWTs from the security library, verified by
the gateway against a JWKS served over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
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


def revoke(g: Any, jti: str) -> None:
    """What the revocation feed or the bus does on a logout: the jti joins the gateway's list."""
    g.gw.env.components["auth"].revocations.add(jti, time.time() + 600)


def push_behind_auth(jwks_url: str) -> dict[str, Any]:
    return {
        "auth": auth_block(jwks_url),
        "routes": [
            {
                "id": "push",
                "match": {"path": "/push"},
                "auth": {"allow_query_token": True},
                "push": {"topics": [{"pattern": "news", "allow": "authenticated"}]},
            }
        ],
    }


async def test_a_websocket_session_ends_when_its_token_is_revoked() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    alice, bob = issuer.issue("alice"), issuer.issue("bob")
    async with jwks_server(ring) as jwks, running_gateway(push_behind_auth(jwks.url)) as g:
        url = f"ws://127.0.0.1:{g.port}/push?topic=news&access_token="
        async with (
            websockets.connect(url + alice.token, ping_interval=None) as alice_ws,
            websockets.connect(url + bob.token, ping_interval=None) as bob_ws,
        ):
            for ws in (alice_ws, bob_ws):
                assert json.loads(await ws.recv()) == {"type": "subscribed", "topic": "news"}
            revoke(g, alice.jti)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(alice_ws.recv(), 3)
            hub(g).publish("news", {"n": 1})  # the other session goes on
            assert json.loads(await asyncio.wait_for(bob_ws.recv(), 3))["data"] == {"n": 1}
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")


async def test_an_event_stream_ends_when_its_token_is_revoked() -> None:
    ring = KeyRing.generate()
    carol = issuer_for(ring).issue("carol")
    async with jwks_server(ring) as jwks, running_gateway(push_behind_auth(jwks.url)) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.port)
        w.write(
            b"GET /push?topic=news HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n"
            b"Authorization: Bearer " + carol.token.encode() + b"\r\n\r\n"
        )
        head = await asyncio.wait_for(r.readuntil(b"retry:"), 3)
        assert head.startswith(b"HTTP/1.1 200"), head
        revoke(g, carol.jti)
        rest = await asyncio.wait_for(r.read(), 3)  # the stream ends and the connection closes
        w.close()
    assert b"event: error" in rest
    assert b'"status":401' in rest
    assert b"the token was revoked" in rest
