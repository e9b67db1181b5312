"""Faults while events flow, with real processes and real brokers: nothing lost, nothing applied twice.

The scenarios live in :mod:`bench.bus_faults` (``./dev bench bus-faults`` runs them with bigger counts):
the ``orders`` service (outbox + relay), the ``billing`` service (idempotent consumer) and lone
relays run as child processes against an embedded nats-server on a free port or the RabbitMQ on
loopback; billing's ``invoices`` table has no unique constraint, so a doubly applied event would
show as a second row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.bus_faults import RABBIT_URL, Broker, Outcome, broker_fault, consumer_kill, relay_kill
from conftest import require
from edgeway.bus.embedded import EmbeddedNats


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
        yield server


@pytest.fixture(params=["nats", "rabbitmq"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    if request.param == "rabbitmq":
        require("rabbitmq")
        under_test = Broker(RABBIT_URL)
        try:
            yield under_test
        finally:
            await under_test.cleanup()
    else:
        async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
            yield Broker(server.url)


def assert_exactly_once(outcome: Outcome) -> None:
    assert outcome.fault_mid_flow, f"{outcome.scenario}: the fault came after the events had flowed"
    assert outcome.lost == 0, f"{outcome.lost} events lost"
    assert outcome.applied_twice == 0, f"{outcome.applied_twice} events applied twice"
    assert outcome.applied == outcome.events


@pytest.mark.xdist_group("bus-faults-50k")
@pytest.mark.timeout(300)
async def test_stopping_the_broker_while_50000_events_flow_loses_none_and_applies_none_twice(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    assert_exactly_once(await broker_fault(nats_server, 50_000, tmp_path, kill=False))


async def test_killing_the_broker_while_events_flow_loses_none_and_applies_none_twice(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    assert_exactly_once(await broker_fault(nats_server, 5000, tmp_path, kill=True))


async def test_a_consumer_killed_mid_batch_is_replaced_without_loss_or_double_apply(
    tmp_path: Path, broker: Broker
) -> None:
    assert_exactly_once(await consumer_kill(broker, 3000, tmp_path))


async def test_a_relay_killed_mid_publish_is_replaced_without_loss_or_double_apply(
    tmp_path: Path, broker: Broker
) -> None:
    assert_exactly_once(await relay_kill(broker, 5000, tmp_path))
