"""Fixtures for the bus tests: one parametrised broker fixture drives the contract tests.

Every test gets unique names (a random NATS prefix, RabbitMQ exchange/queue prefix, channel
suffix), and the broker objects it created are deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import delete_nats_streams, require
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.memory import MemoryBroker, MemoryTransport
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import Transport

BROKERS = ["memory", "nats", "rabbitmq"]


class BrokerUnderTest:
    """Makes transports connected to the same broker, and cleans up after the test."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.token = uuid.uuid4().hex[:10]
        self.memory = MemoryBroker()
        self.made: list[Any] = []

    def make(self) -> Transport:
        transport: Any
        if self.kind == "memory":
            transport = MemoryTransport(self.memory)
        elif self.kind == "nats":
            from edgeway.bus.nats import NatsTransport

            transport = NatsTransport("nats://127.0.0.1:4222", prefix="t" + self.token)
        else:
            from edgeway.bus.rabbit import RabbitTransport

            transport = RabbitTransport("amqp://guest:guest@127.0.0.1:5672/", prefix="t" + self.token)
        self.made.append(transport)
        return transport  # type: ignore[no-any-return]

    async def cleanup(self) -> None:
        for transport in self.made:
            await transport.close()
            if self.kind == "rabbitmq":
                await transport.teardown()
        if self.kind == "nats":
            await delete_nats_streams("T" + self.token.upper())


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerUnderTest]:
    kind = request.param
    if kind == "nats":
        require("nats")
    elif kind == "rabbitmq":
        require("rabbitmq")
    under_test = BrokerUnderTest(kind)
    try:
        yield under_test
    finally:
        await under_test.cleanup()


@pytest.fixture
def unique() -> Callable[[str], str]:
    token = uuid.uuid4().hex[:8]
    return lambda base: f"{base}-{token}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Any]:
    from .db import close_database, open_database

    if request.param == "postgres":
        require("postgres")
    db = await open_database(request.param, str(tmp_path))
    try:
        yield db
    finally:
        await close_database(db)


@pytest.fixture
async def nats_transport(tmp_path: Path) -> AsyncIterator[NatsTransport]:
    """A connected NATS transport on its own embedded nats-server (a free port)."""
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
        transport = NatsTransport(server.url, prefix="t")
        await transport.connect()
        try:
            yield transport
        finally:
            await transport.close()
