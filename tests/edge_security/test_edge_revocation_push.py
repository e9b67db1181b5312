"""Revocations pushed to gateways over the event bus, with the polled feed as the catch-up.

Everything is real: the security service (FastAPI under uvicorn, its outbox relay publishing
``TokenRevokedEvent``), an embedded nats-server on a free port or the RabbitMQ on loopback,
gateways with their admin port, a backend recording what reached it. Poll intervals are an hour
wherever the push alone must explain a refusal.

Where a test needs a revocation the polled feed cannot know of, it publishes ``TokenRevokedEvent``
on the bus itself (as the service's relay does) for a token the service issued: then only the push
can explain the refusal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from edge_helpers import Edge, auth_block, edge, edge_config, eventually, recording_backend, security_service

from conftest import require
from edgeway.bus.brokers import transport_for
from edgeway.bus.bus import EventBus
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.transport import ChannelConfig
from edgeway.security.events import USERS_CHANNEL
from edgeway.security.revocation import REVOCATIONS, TokenRevokedEvent

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOUR = "3600s"


def pushed_config(service: str, backend_port: int, broker: str, prefix: str, **bus: Any) -> dict[str, Any]:
    """`/api/**` needs a token; revocations polled from ``service`` hourly, pushed from ``broker``."""
    revocations = {
        "url": f"{service}/revocations",
        "interval": HOUR,
        "bus": {"url": broker, "prefix": prefix, **bus},
    }
    return edge_config(
        backend_port,
        [{"match": {"path": "/api/**"}, "auth": {}}],
        auth_block(f"{service}/.well-known/jwks.json", revocations=revocations),
    )


# --------------------------------------------------------------------------- tokens and revocations


async def login(http: httpx.AsyncClient, service: str, username: str) -> str:
    form = {
        "grant_type": "password",
        "username": username,
        "password": f"{username}-password",
        "client_id": "web",
    }
    response = await http.post(f"{service}/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(value, dict)
    return value


@contextlib.asynccontextmanager
async def publisher(broker: str, prefix: str) -> AsyncIterator[EventBus]:
    """A bus publishing on the revocations channel the way the security service's relay does."""
    bus = EventBus(transport_for(broker, prefix), channels=[REVOCATIONS])
    async with bus:
        yield bus


async def revoke_on_the_bus(bus: EventBus, token: str) -> None:
    claims = claims_of(token)
    await bus.publish(TokenRevokedEvent(jti=claims["jti"], exp=float(claims["exp"]), reason="test"))


async def status_of(http: httpx.AsyncClient, gw: Edge, token: str) -> int:
    return (await http.get(gw.url("/api/orders"), headers={"authorization": f"Bearer {token}"})).status_code


async def refused(http: httpx.AsyncClient, gw: Edge, token: str, timeout: float = 10.0) -> None:
    async def check() -> bool:
        return await status_of(http, gw, token) == 401

    await eventually(check, timeout=timeout)


async def push_state(http: httpx.AsyncClient, gw: Edge) -> str:
    _, body = await gw.readyz(http)
    return str(body["auth"]["revocations"]["push"]["state"])


async def state_becomes(http: httpx.AsyncClient, gw: Edge, state: str, timeout: float = 10.0) -> None:
    async def check() -> bool:
        return await push_state(http, gw) == state

    await eventually(check, timeout=timeout)


# --------------------------------------------------------------------------- brokers


@dataclass
class Broker:
    url: str
    prefix: str


@pytest.fixture(params=["nats", "rabbitmq"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    prefix = "rv" + uuid.uuid4().hex[:8]
    if request.param == "nats":
        async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
            yield Broker(server.url, prefix)
        return
    require("rabbitmq")
    try:
        yield Broker(RABBIT_URL, prefix)
    finally:
        # The shared broker keeps exchanges and queues: delete what this test's prefix made.
        cleanup = transport_for(RABBIT_URL, prefix)
        await cleanup.connect()
        for channel in (REVOCATIONS, ChannelConfig(USERS_CHANNEL)):
            await cleanup.declare(channel)
        await cleanup.teardown()  # type: ignore[attr-defined]
        await cleanup.close()


# --------------------------------------------------------------------------- tests


async def test_a_token_revoked_at_the_service_is_refused_by_every_gateway_without_waiting_for_a_poll(
    tmp_path: Path, broker: Broker
) -> None:
    async with (
        recording_backend() as (port, seen),
        security_service(tmp_path, bus_url=broker.url, bus_prefix=broker.prefix) as service,
    ):
        # fallback_interval an hour too: even a push that went down could not be covered by polling
        cfg = pushed_config(service, port, broker.url, broker.prefix, fallback_interval=HOUR)
        async with edge(cfg) as one, edge(cfg) as two, httpx.AsyncClient() as http:
            gateways = (one, two)
            states = [await push_state(http, gw) for gw in gateways]
            token = await login(http, service, "alice")
            before = [await status_of(http, gw, token) for gw in gateways]
            revoked = await http.post(f"{service}/oauth/revoke", data={"token": token})
            assert revoked.status_code == 200
            for gw in gateways:
                await refused(http, gw, token)
            forwarded = len(seen.requests)
            answers = [
                await http.get(gw.url("/api/orders"), headers={"authorization": f"Bearer {token}"})
                for gw in gateways
            ]
            polls = [
                await gw.metric(http, "edgeway_gateway_revocation_polls_total", result="ok")
                for gw in gateways
            ]
            pushed = [
                await gw.metric(http, "edgeway_gateway_revocations_received_total", source="push")
                for gw in gateways
            ]
            known = [await gw.metric(http, "edgeway_gateway_revocations_known") for gw in gateways]
    assert states == ["up", "up"]
    assert before == [200, 200]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["reason"] == "revoked"
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert len(seen.requests) == forwarded  # once refused, nothing reaches the backend
    assert polls == [1.0, 1.0]  # the poll at start only: the push alone explains the refusal
    assert all(n >= 1 for n in pushed)
    assert known == [1.0, 1.0]


async def test_a_gateway_started_while_the_broker_is_down_serves_polls_and_takes_the_push_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgeway.gateway.filters.auth.filter")
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    await asyncio.to_thread(server.start)  # takes a free port, kept by the restart below
    await asyncio.to_thread(server.stop)
    prefix = "rvdown"
    async with recording_backend() as (port, _), security_service(tmp_path) as service:
        cfg = pushed_config(
            service,
            port,
            server.url,
            prefix,
            connect_timeout="1s",
            retry_interval="300ms",
            fallback_interval="200ms",
        )
        async with edge(cfg) as gw, httpx.AsyncClient() as http:  # starts although the broker is down
            status, ready = await gw.readyz(http)
            push_up = await gw.metric(http, "edgeway_gateway_revocations_push_up")
            # Polling continues meanwhile, on the fast interval: a logout still takes effect.
            polled = await login(http, service, "alice")
            assert await status_of(http, gw, polled) == 200
            await http.post(f"{service}/oauth/revoke", data={"token": polled})
            await refused(http, gw, polled, timeout=5.0)

            await asyncio.to_thread(server.start)
            try:
                await state_becomes(http, gw, "up")
                token = await login(http, service, "bob")
                assert await status_of(http, gw, token) == 200
                async with publisher(server.url, prefix) as bus:
                    await revoke_on_the_bus(bus, token)  # the service's feed never lists it
                    await refused(http, gw, token)
                pushed = await gw.metric(http, "edgeway_gateway_revocations_received_total", source="push")
                push_up_later = await gw.metric(http, "edgeway_gateway_revocations_push_up")
            finally:
                await asyncio.to_thread(server.stop)
    assert status == 200  # a bus outage does not make the gateway unready...
    push = ready["auth"]["revocations"]["push"]
    assert push["state"] == "connecting"  # ...but it says so
    assert push["last_error"]
    assert ready["auth"]["revocations"]["poll"]["interval"] == 0.2
    assert (push_up, push_up_later) == (0.0, 1.0)
    assert pushed == 1.0
    down = [
        r.getMessage()
        for r in caplog.records
        if "revocation push is down: cannot subscribe" in r.getMessage()
    ]
    assert len(down) == 1  # once per outage, not per connection attempt
    assert server.url in down[0]
    assert any("revocation push is back" in r.getMessage() for r in caplog.records)


async def test_losing_the_broker_keeps_known_revocations_and_polls_fast_until_it_is_back(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    prefix = "rvlost"
    await asyncio.to_thread(server.start)
    try:
        async with recording_backend() as (port, seen), security_service(tmp_path) as service:
            cfg = pushed_config(
                service, port, server.url, prefix, retry_interval="300ms", fallback_interval="200ms"
            )
            async with edge(cfg) as gw, httpx.AsyncClient() as http:
                pushed = await login(http, service, "alice")
                async with publisher(server.url, prefix) as bus:
                    await revoke_on_the_bus(bus, pushed)
                await refused(http, gw, pushed)
                interval_up = (await gw.readyz(http))[1]["auth"]["revocations"]["poll"]["interval"]

                await asyncio.to_thread(server.stop)
                await state_becomes(http, gw, "reconnecting")
                status, ready = await gw.readyz(http)
                still_refused = await status_of(http, gw, pushed)  # known before: still refused
                polled = await login(http, service, "bob")
                await http.post(f"{service}/oauth/revoke", data={"token": polled})
                await refused(http, gw, polled, timeout=5.0)  # the fast poll, push or no push

                await asyncio.to_thread(server.start)
                await state_becomes(http, gw, "up")
                later = await login(http, service, "root")
                received = await gw.metric(http, "edgeway_gateway_revocations_received_total", source="push")
                async with publisher(server.url, prefix) as bus:
                    # The restarted server may have forgotten the gateway's consumer, which the
                    # gateway makes again on its next pull: publish until the push delivers.
                    async def delivered() -> bool:
                        await revoke_on_the_bus(bus, later)
                        return await status_of(http, gw, later) == 401

                    await eventually(delivered, timeout=15.0, interval=0.5)
                received_after = await gw.metric(
                    http, "edgeway_gateway_revocations_received_total", source="push"
                )

                async def slow_again() -> bool:
                    return bool(
                        (await gw.readyz(http))[1]["auth"]["revocations"]["poll"]["interval"] == 3600.0
                    )

                await eventually(slow_again, timeout=10.0)
                forwarded = len(seen.requests)
                final = [await status_of(http, gw, t) for t in (pushed, polled, later)]
    finally:
        await asyncio.to_thread(server.stop)
    assert interval_up == 3600.0
    assert status == 200
    assert ready["auth"]["revocations"]["push"]["state"] == "reconnecting"
    assert ready["auth"]["revocations"]["poll"]["interval"] == 0.2
    assert still_refused == 401
    assert received_after > received
    assert final == [401, 401, 401]
    assert len(seen.requests) == forwarded
