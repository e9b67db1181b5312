"""A proxied WebSocket tunnel ends with the token that opened it: revoked (a logout) or expired.

Real sockets throughout: a websockets echo service behind a real gateway, clients that connect
with a bearer token the gateway verifies against a JWKS it fetches."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from edge_helpers import auth_block, issuer_for, jwks_server
from websockets.asyncio.client import connect as ws_connect

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.filters.auth.tokens import EdgeAuth
from edgeway.http.listener import Listener, bind_socket
from edgeway.security.keys import KeyRing


class EchoService:
    """A WebSocket echo service that remembers which of its connections have ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    async def __call__(self, ws: websockets.ServerConnection) -> None:
        who = ws.request.headers.get("x-test-who", "?") if ws.request is not None else "?"
        try:
            async for message in ws:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.ended.append(who)


@contextlib.asynccontextmanager
async def tunnelling_gateway(
    jwks_url: str, upstream_port: int
) -> AsyncIterator[tuple[int, io.BytesIO, Gateway]]:
    cfg: dict[str, Any] = {
        "name": "tunnel-test",
        # no clock-skew allowance: the test's issuer and gateway share one clock, and an expired
        # token's new handshake must be refused at once
        "auth": auth_block(jwks_url, leeway=0),
        "services": {"chat": {"instances": [f"http://127.0.0.1:{upstream_port}"]}},
        "routes": [
            {
                "id": "chat",
                "match": {"path": "/chat"},
                "auth": {},
                "proxy": {"service": "chat", "websocket": True},
            }
        ],
    }
    out = io.BytesIO()
    gw = Gateway(validate_config(cfg), AccessLog("tunnel-test", out))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port, out, gw
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


def connect(port: int, token: str, who: str) -> ws_connect:
    return websockets.connect(
        f"ws://127.0.0.1:{port}/chat",
        additional_headers={"Authorization": f"Bearer {token}", "X-Test-Who": who},
        ping_interval=None,
    )


async def echoes(ws: websockets.ClientConnection, text: str) -> bool:
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 3) == text


def tunnel_lines(out: io.BytesIO) -> list[dict[str, Any]]:
    return [line for line in map(orjson.loads, out.getvalue().splitlines()) if line.get("route") == "chat"]


async def test_a_revoked_token_closes_its_tunnel_and_only_its_own() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    alice, bob = issuer.issue("alice"), issuer.issue("bob")
    service = EchoService()
    async with (
        jwks_server(ring) as jwks,
        websockets.serve(service, "127.0.0.1", 0) as upstream,
        tunnelling_gateway(jwks.url, upstream.sockets[0].getsockname()[1]) as (port, out, gw),
    ):
        async with connect(port, alice.token, "alice") as a, connect(port, bob.token, "bob") as b:
            assert await echoes(a, "hi from alice")
            assert await echoes(b, "hi from bob")
            auth = gw.env.components["auth"]
            assert isinstance(auth, EdgeAuth)
            auth.revocations.add(alice.jti, time.time() + 600)  # a logout
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(a.recv(), 3)
            assert await echoes(b, "bob goes on")
            for _ in range(100):  # the service's side of alice's tunnel is closed too
                if "alice" in service.ended:
                    break
                await asyncio.sleep(0.02)
            assert service.ended == ["alice"]
        for _ in range(100):
            if len(tunnel_lines(out)) == 2:
                break
            await asyncio.sleep(0.02)
    ends = {line.get("tunnel_end") for line in tunnel_lines(out)}
    assert ends == {"token revoked", None}


async def test_an_expiring_token_closes_its_tunnel_at_its_exp() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    short, long = issuer.issue("carol", ttl=2), issuer.issue("dave", ttl=600)
    service = EchoService()
    async with (
        jwks_server(ring) as jwks,
        websockets.serve(service, "127.0.0.1", 0) as upstream,
        tunnelling_gateway(jwks.url, upstream.sockets[0].getsockname()[1]) as (port, _, _),
        connect(port, short.token, "carol") as c,
        connect(port, long.token, "dave") as d,
    ):
        assert await echoes(c, "before exp")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(c.recv(), 5)
        # exp is whole seconds: the tunnel lived to it and not past it (plus the loop's slack)
        assert time.time() >= short.claims["exp"] - 0.05
        assert time.time() < short.claims["exp"] + 1.5
        assert await echoes(d, "the other tunnel lives on")
        # a fresh handshake with the expired token is refused: the client must log in again
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(port, short.token, "carol"):
                pass
        assert refused.value.response.status_code == 401
