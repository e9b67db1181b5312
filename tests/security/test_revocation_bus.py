"""Revocations pushed over the event bus: the security service publishes, gateways' lists follow.

The service runs in-process (ASGI) on a temp SQLite file; the broker is an embedded nats-server on
a free port; the "gateway" is a bus with a :class:`RevocationSubscriber` feeding a list.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.errors import BusConfigError
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import ChannelConfig
from edgeway.observability.tracing import Tracing
from edgeway.security.revocation import RevocationList, RevocationSubscriber, TokenRevokedEvent
from edgeway.security.verify import KeySet, TokenVerifier

from .conftest import ISSUER, login, running_service, service_settings, token_for

PREFIX = "rv"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
        yield server


async def jti_of(service: httpx.AsyncClient, token: str) -> str:
    jwks = (await service.get("/.well-known/jwks.json")).json()
    jti = TokenVerifier(KeySet.from_jwks(jwks), issuer=ISSUER, audience="shop").verify(token).jti
    assert jti is not None
    return jti


async def arrives(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not there within {within} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def test_a_revoked_token_is_on_every_gateways_list_within_a_second(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = service_settings(tmp_path, bus_url=nats_server.url, bus_prefix=PREFIX)
    gateways = [RevocationList(), RevocationList()]
    buses = [EventBus(NatsTransport(nats_server.url, prefix=PREFIX)) for _ in gateways]
    for bus, revocations in zip(buses, gateways, strict=True):
        RevocationSubscriber(bus, revocations)  # two instances: each must get every revocation
    async with running_service(settings) as service, buses[0], buses[1]:
        warm_up = (await login(service, "sam", "sam-password")).json()["access_token"]
        await service.post("/oauth/revoke", data={"token": warm_up})
        warm_jti = await jti_of(service, warm_up)
        await arrives(lambda: all(warm_jti in g for g in gateways), within=10.0)  # the relay is up

        token = (await login(service, "alice", "alice-password")).json()["access_token"]
        jti = await jti_of(service, token)
        started = time.monotonic()
        response = await service.post("/oauth/revoke", data={"token": token})
        assert response.status_code == 200
        await arrives(lambda: all(jti in g for g in gateways), within=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    # The polling feed still lists it: gateways without the bus, or catching up, see it there too.
    async with running_service(settings) as service:
        assert jti in {e["jti"] for e in (await service.get("/revocations")).json()["entries"]}


async def test_the_service_publishes_through_a_nats_cluster_list_with_a_dead_server(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: refuses connections
    try:
        cluster = f"nats://127.0.0.1:{dead.getsockname()[1]}, {nats_server.url}"
        settings = service_settings(tmp_path, bus_url=cluster, bus_prefix=PREFIX)
        revocations = RevocationList()
        gateway = EventBus(NatsTransport(nats_server.url, prefix=PREFIX))
        RevocationSubscriber(gateway, revocations)
        async with running_service(settings) as service, gateway:
            token = (await login(service, "alice", "alice-password")).json()["access_token"]
            assert (await service.post("/oauth/revoke", data={"token": token})).status_code == 200
            jti = await jti_of(service, token)
            await arrives(lambda: jti in revocations, within=10.0)
    finally:
        dead.close()


async def test_refresh_token_reuse_pushes_every_access_token_of_the_family(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = service_settings(tmp_path, bus_url=nats_server.url, bus_prefix=PREFIX)
    revocations = RevocationList()
    gateway = EventBus(NatsTransport(nats_server.url, prefix=PREFIX))
    subscriber = RevocationSubscriber(gateway, revocations)
    refresh = {"grant_type": "refresh_token", "client_id": "web"}
    async with running_service(settings) as service, gateway:
        first = (await login(service, "alice", "alice-password")).json()
        second = (
            await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        ).json()
        jtis = {await jti_of(service, first["access_token"]), await jti_of(service, second["access_token"])}
        reuse = await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        assert reuse.status_code == 400
        await arrives(lambda: all(j in revocations for j in jtis), within=10.0)
    assert subscriber.received == 2


async def test_a_revocation_made_while_the_broker_is_down_is_published_when_it_is_back(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    await asyncio.to_thread(server.start)  # takes a free port, kept by the restart below
    await asyncio.to_thread(server.stop)
    settings = service_settings(tmp_path, bus_url=server.url, bus_prefix=PREFIX)
    async with running_service(settings) as service:  # starts although the broker is down
        token = (await login(service, "alice", "alice-password")).json()["access_token"]
        assert (await service.post("/oauth/revoke", data={"token": token})).status_code == 200
        jti = await jti_of(service, token)
        await asyncio.sleep(0.5)  # the service's first connection attempts have failed by now
        await asyncio.to_thread(server.start)
        try:
            # A durable group reads the channel from its beginning: it sees what the outbox kept.
            seen: list[str] = []

            async def audit(event: TokenRevokedEvent) -> None:
                seen.append(event.jti)

            auditor = EventBus(NatsTransport(server.url, prefix=PREFIX))
            auditor.add_handler(TokenRevokedEvent, audit, group="audit")
            async with auditor:
                await arrives(lambda: jti in seen, within=15.0)
        finally:
            await asyncio.to_thread(server.stop)


async def test_a_revocation_is_published_in_the_trace_of_the_request_that_revoked(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """The outbox write is a PRODUCER span under the revoking request's SERVER span, the event's
    ``traceparent`` names it and its ``x-request-id`` is the request's; a consumer with a tracer
    handles it in a CONSUMER span of that trace."""
    exporter = InMemorySpanExporter()
    service_tracing = Tracing("security", processor=SimpleSpanProcessor(exporter), environ={})
    gateway_tracing = Tracing("gateway", processor=SimpleSpanProcessor(exporter), environ={})
    settings = service_settings(tmp_path, bus_url=nats_server.url, bus_prefix=PREFIX)
    seen: dict[str, Received] = {}

    async def record(event: TokenRevokedEvent, received: Received) -> None:
        seen[event.jti] = received

    gateway = EventBus(NatsTransport(nats_server.url, prefix=PREFIX), tracer=gateway_tracing.tracer)
    gateway.add_handler(TokenRevokedEvent, record, group="trace-test", broadcast=True)
    async with running_service(settings, tracing=service_tracing) as service, gateway:
        token = await token_for(service, "alice", "alice-password")
        jti = await jti_of(service, token)
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = await service.post(
            "/oauth/revoke",
            data={"token": token},
            headers={"traceparent": caller, "x-request-id": "logout-42"},
        )
        assert response.status_code == 200
        await arrives(lambda: jti in seen, within=10.0)
        processed = exporter.get_finished_spans
        await arrives(lambda: any(s.name == "process revocations" for s in processed()), within=5.0)
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /oauth/revoke"]
    assert server.context is not None
    # one PRODUCER span per outbox write the request made (a logout revokes the access token,
    # then its session's family)
    producers = {
        s.context.span_id: s
        for s in spans
        if s.kind is SpanKind.PRODUCER and s.parent is not None and s.parent.span_id == server.context.span_id
    }
    assert producers
    for span in producers.values():
        assert span.name == "create revocations"
        assert span.attributes is not None
        assert span.attributes["edgeway.request_id"] == "logout-42"
    # the message carries one of them as its parent, and the request's id
    received = seen[jti]
    assert received.request_id == "logout-42"
    assert received.traceparent is not None
    _, trace_id, parent_id, _ = received.traceparent.split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    producer = producers[int(parent_id, 16)]
    (consumer,) = [
        s
        for s in spans
        if s.kind is SpanKind.CONSUMER and (s.attributes or {}).get("messaging.message.id") == received.id
    ]
    assert producer.context is not None
    assert consumer.context is not None
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == server.context.trace_id
    gateway_tracing.shutdown()


def test_the_subscriber_refuses_a_channel_token_revoked_does_not_travel_on() -> None:
    with pytest.raises(BusConfigError, match="TokenRevokedEvent travels on channel 'revocations'"):
        RevocationSubscriber(EventBus(MemoryTransport()), RevocationList(), channel=ChannelConfig("other"))


def test_a_watcher_hears_each_token_revoked_once_and_not_an_expired_one() -> None:
    now = [1000.0]
    revocations = RevocationList(clock=lambda: now[0])
    heard: list[str] = []
    revocations.watch(heard.append)
    revocations.add("j1", 2000.0)
    revocations.add("j1", 3000.0)  # the feed and the bus may both deliver it
    revocations.add("old", 500.0)  # expired already: nothing to end
    revocations.add("j2", 2000.0)
    assert heard == ["j1", "j2"]
    assert "j1" in revocations
    assert "old" not in revocations
