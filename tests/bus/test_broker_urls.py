"""Broker URL settings: one parser (edgeway.bus.urls), and every entry point that connects to a
broker takes a comma-separated NATS cluster list, one of whose servers is dead.

The live server is the NATS every bus test uses; the dead one is a port bound but not listening
(held for the test, so nothing else can take it), which refuses connections.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import require
from edgeway.bus.brokers import transport_for
from edgeway.bus.cli import app as bus_cli
from edgeway.bus.errors import BusConfigError
from edgeway.bus.nats import NatsTransport
from edgeway.bus.rabbit import RabbitTransport
from edgeway.bus.urls import broker_urls, nats_servers

LIVE = "nats://127.0.0.1:4222"


@pytest.fixture
def dead_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def cluster(dead_url: str) -> str:
    require("nats")
    return f"{dead_url}, {LIVE}"


# --- the parser -----------------------------------------------------------------------------------


def test_a_comma_separated_list_is_split_stripped_and_empty_entries_dropped() -> None:
    assert broker_urls(" nats://a:4222 ,tls://b:4223,, nats://c ") == [
        "nats://a:4222",
        "tls://b:4223",
        "nats://c",
    ]
    assert nats_servers(["nats://a:4222,nats://b:4222", "nats://c:4222"]) == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    assert broker_urls("amqp://u:p@rabbit:5672/") == ["amqp://u:p@rabbit:5672/"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "no broker URL"),
        (" , ", "no broker URL"),
        ("amqp://a:5672/,amqp://b:5672/", "RabbitMQ takes one broker URL"),
        ("nats://a:4222,amqp://b:5672/", "must all be"),
        ("nats://a:notaport", "invalid broker URL"),
        ("http://a:4222", "invalid broker URL"),
        ("a:4222", "invalid broker URL"),
        ("nats://", "invalid broker URL"),
    ],
)
def test_a_malformed_setting_is_a_config_error_naming_it(value: str, message: str) -> None:
    with pytest.raises(BusConfigError, match=message):
        broker_urls(value)


def test_passwords_stay_out_of_the_error() -> None:
    with pytest.raises(BusConfigError) as info:
        broker_urls("amqp://user:secret@a:5672/,amqp://user:secret@b:5672/")
    assert "secret" not in str(info.value)


def test_nats_servers_refuses_a_rabbitmq_url() -> None:
    with pytest.raises(BusConfigError, match="not a NATS URL"):
        nats_servers("amqp://guest:guest@127.0.0.1:5672/")


def test_transport_for_builds_the_transport_from_the_parsed_list() -> None:
    transport = transport_for("nats://a:4222, nats://b:4222", "t1")
    assert isinstance(transport, NatsTransport)
    assert transport.servers == ["nats://a:4222", "nats://b:4222"]
    assert isinstance(transport_for(" amqp://guest:guest@127.0.0.1:5672/ "), RabbitTransport)


# --- every entry point, against a dead and a live server ------------------------------------------


async def test_the_bus_transport_connects_through_a_list_with_a_dead_server(cluster: str) -> None:
    transport = transport_for(cluster, "u" + uuid.uuid4().hex[:8])
    await transport.connect()
    try:
        assert transport.connected
    finally:
        await transport.close()


async def test_the_kits_nats_connection_takes_a_list_with_a_dead_server(cluster: str) -> None:
    # natsconn: the service kit's registry and config store, and the gateway's NATS KV discovery.
    from edgeway.discovery import natsconn

    nc = await natsconn.connect(cluster, timeout=1.0)
    try:
        assert nc.is_connected
        assert nc.connected_url is not None
        assert nc.connected_url.port == 4222
    finally:
        await nc.close()


def test_the_dlq_cli_takes_a_list_with_a_dead_server(cluster: str) -> None:
    channel = "urls" + uuid.uuid4().hex[:6]
    args = ["dlq", "list", "--channel", channel, "--url", cluster, "--prefix", "u" + uuid.uuid4().hex[:8]]
    result = CliRunner().invoke(bus_cli, args)
    assert result.exit_code == 0, result.output
    assert f"no dead letters on {channel}" in result.output


async def test_the_gateways_revocation_push_subscribes_through_a_list_with_a_dead_server(
    cluster: str,
) -> None:
    from edgeway.gateway.filters.auth.config import RevocationBus
    from edgeway.gateway.filters.auth.revocation_push import PushState, RevocationPush
    from edgeway.security.revocation import RevocationFeed, RevocationList, TokenRevokedEvent

    prefix = "u" + uuid.uuid4().hex[:8]
    feed = RevocationFeed("http://127.0.0.1:9/revocations", RevocationList(), interval=60)
    push = RevocationPush(RevocationBus(url=cluster, prefix=prefix), feed, poll_interval=60)
    await push.start()
    try:
        assert push.state is PushState.UP, push.last_error
        publisher = transport_for(LIVE, prefix)
        from edgeway.bus.bus import EventBus

        async with EventBus(publisher) as bus:
            await bus.publish(TokenRevokedEvent(jti="j-list", exp=4_000_000_000.0))
        for _ in range(200):
            if "j-list" in feed.revocations:
                break
            await asyncio.sleep(0.02)
        assert "j-list" in feed.revocations
    finally:
        await push.stop()
        await feed.stop()


async def test_the_push_source_follows_the_bus_through_a_list_with_a_dead_server(cluster: str) -> None:
    from edgeway.gateway.actions.push.bus_source import BusSource
    from edgeway.gateway.actions.push.config import PushBusSource

    prefix = "u" + uuid.uuid4().hex[:8]
    config = PushBusSource.model_validate(
        {"url": cluster, "prefix": prefix, "channels": [{"channel": "jobs", "topic": "jobs/{id}"}]}
    )
    received: list[tuple[str, Any]] = []

    class Sink:
        def publish(self, topic: str, data: Any, *, event: str = "message", id: str | None = None) -> None:
            received.append((topic, data))

    source = BusSource(config)
    await source.start(Sink())
    try:
        from edgeway.bus.bus import EventBus
        from edgeway.bus.events import Event

        class JobDone(Event):
            channel = "jobs"
            event_type = "job.done.v1"
            id: str

        async with EventBus(transport_for(LIVE, prefix)) as bus:
            await bus.publish(JobDone(id="7"))
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.02)
        assert [topic for topic, _ in received] == ["jobs/7"]
    finally:
        await source.stop()


async def test_the_demos_flags_take_a_list_with_a_dead_server(cluster: str) -> None:
    # A system file's broker.nats.external_url may be a cluster list; the demo creates its flag
    # bucket there and `edgeway demo flag` and the control room write to it.
    import nats

    from edgeway.demo.flags import ensure_config_bucket, set_flag

    bucket = "u" + uuid.uuid4().hex[:8]
    await ensure_config_bucket(cluster, bucket)
    nc = await nats.connect(LIVE)
    try:
        await set_flag(cluster, bucket, "payments.fail", True)
        kv = await nc.jetstream().key_value(bucket)
        assert (await kv.get("flags.payments.fail")).value == b"true"
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


def test_gateway_config_checks_broker_settings_with_the_same_parser() -> None:
    from pydantic import ValidationError

    from edgeway.gateway.actions.push.config import PushBusSource
    from edgeway.gateway.filters.auth.config import RevocationBus
    from edgeway.gateway.upstream.config import NatsKvRule

    assert RevocationBus(url="nats://a:4222,nats://b:4222").url == "nats://a:4222,nats://b:4222"
    assert NatsKvRule(url="nats://a:4222, nats://b:4222", service="orders").service == "orders"
    with pytest.raises(ValidationError, match="RabbitMQ takes one broker URL"):
        RevocationBus(url="amqp://a:5672/,amqp://b:5672/")
    with pytest.raises(ValidationError, match="not a NATS URL"):
        NatsKvRule(url="amqp://a:5672/", service="orders")
    with pytest.raises(ValidationError, match="does not fit"):
        PushBusSource.model_validate(
            {"url": "amqp://a:5672/", "channels": [{"channel": "jobs", "topic": "jobs/{id}"}]}
        )
