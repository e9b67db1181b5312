"""The acknowledgement step: every named service must answer; re-sends; who did not answer."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel
from saga_helpers import FAST, open_db

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.events import Event, envelope_for
from edgeway.bus.memory import MemoryBroker, MemoryTransport
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import Backoff, Transport
from edgeway.saga import (
    Acknowledgement,
    AckReport,
    Saga,
    SagaConfigError,
    SagaStatus,
    StepContext,
    StepStatus,
    ack_event,
    ack_step,
    acknowledge,
)
from edgeway.saga.store import SagaStore


class PriceChange(BaseModel):
    sku: str
    cents: int


class PriceChanged(Event):
    channel = "prices"
    event_type = "price.changed.v1"
    sku: str
    cents: int


def announce_saga(
    *, deadline: float, require_all: bool = False, undone: list[str] | None = None
) -> Saga[PriceChange]:
    saga = Saga("announce_price", PriceChange)

    async def undo(ctx: StepContext[PriceChange]) -> None:
        if undone is not None:
            undone.append(ctx.step)

    ack_step(
        saga,
        "announce",
        event=lambda ctx: PriceChanged(sku=ctx.data.sku, cents=ctx.data.cents),
        services=["billing", "shipping", "mailer"],
        deadline=deadline,
        resend=Backoff(initial=0.2, factor=1.5, maximum=0.4),
        require_all=require_all,
        compensate=undo,
    )
    return saga


class Services:
    """billing answers at once; shipping ignores the first delivery; mailer never answers."""

    def __init__(self, make_transport: type[Transport] | object, *args: object) -> None:
        self.received: Counter[str] = Counter()
        self.buses: list[EventBus] = []
        for name in ("billing", "shipping", "mailer"):
            bus = EventBus(make_transport(*args))  # type: ignore[operator]
            bus.add_handler(PriceChanged, self._handler(bus, name), group=name)
            self.buses.append(bus)

    def _handler(self, bus: EventBus, name: str):  # type: ignore[no-untyped-def]
        async def handle(event: PriceChanged, ctx: Received) -> None:
            self.received[name] += 1
            if name == "billing" or (name == "shipping" and self.received[name] >= 2):
                assert await acknowledge(bus, ctx)

        return handle

    async def __aenter__(self) -> Services:
        for bus in self.buses:
            await bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for bus in self.buses:
            await bus.stop()


async def test_on_nats_the_step_reports_who_did_not_answer_and_resends_only_to_the_silent(
    tmp_path: Path,
) -> None:
    async with (
        EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server,
        open_db("sqlite", tmp_path) as db,
        Services(NatsTransport, server.url) as services,
    ):
        bus = EventBus(NatsTransport(server.url))
        orchestrator = db.orchestrator([announce_saga(deadline=2.0)], bus=bus, service="orders")
        async with bus, orchestrator:
            saga_id = await orchestrator.run("announce_price", PriceChange(sku="sku-1", cents=250))
            state = await orchestrator.wait(saga_id, timeout=20)

    assert state.status is SagaStatus.COMPLETED
    report = AckReport.model_validate(state.step("announce").result)
    assert sorted(report.acked) == ["billing", "shipping"]
    assert report.missing == ["mailer"]
    assert not report.complete
    assert report.sends["billing"] == 1  # answered the first time: never sent again
    assert report.sends["shipping"] == 2  # answered the re-send
    assert report.sends["mailer"] >= 4  # kept being re-sent until the deadline
    assert services.received["billing"] == 1
    assert services.received["shipping"] == 2
    assert services.received["mailer"] == report.sends["mailer"]


async def test_with_require_all_a_missing_answer_compensates_and_keeps_the_report(tmp_path: Path) -> None:
    broker = MemoryBroker()
    undone: list[str] = []
    async with open_db("sqlite", tmp_path) as db, Services(MemoryTransport, broker):
        bus = EventBus(MemoryTransport(broker))
        saga = announce_saga(deadline=0.6, require_all=True, undone=undone)
        orchestrator = db.orchestrator([saga], bus=bus, service="orders")
        async with bus, orchestrator:
            saga_id = await orchestrator.run("announce_price", PriceChange(sku="sku-2", cents=100))
            state = await orchestrator.wait(saga_id, timeout=10)

    assert state.status is SagaStatus.COMPENSATED
    assert state.error == (
        "step 'announce' failed: AcksMissingError: step 'announce': "
        "no acknowledgement from mailer before the deadline"
    )
    step = state.step("announce")
    assert step.status is StepStatus.COMPENSATED
    assert AckReport.model_validate(step.result).missing == ["mailer"]
    assert undone == ["announce"]


async def test_an_ack_consumed_by_another_replica_reaches_the_waiting_step(tmp_path: Path) -> None:
    broker = MemoryBroker()
    async with open_db("sqlite", tmp_path) as db:
        responders = EventBus(MemoryTransport(broker))

        async def answer(event: PriceChanged, ctx: Received) -> None:
            await acknowledge(responders, ctx, service=ctx.group)

        for name in ("billing", "shipping", "mailer"):
            responders.add_handler(PriceChanged, answer, group=name)
        saga = announce_saga(deadline=5.0)
        # Replica a runs the saga but its bus consumes nothing (never started): every ack lands
        # at replica b, which records it in the shared database.
        bus_a = EventBus(MemoryTransport(broker))
        bus_b = EventBus(MemoryTransport(broker))
        a = db.orchestrator([saga], bus=bus_a, service="orders")
        b = db.orchestrator([announce_saga(deadline=5.0)], bus=bus_b, service="orders")
        async with responders, bus_b, a, b:
            saga_id = await a.run("announce_price", PriceChange(sku="sku-3", cents=1))
            state = await a.wait(saga_id, timeout=10)

    report = AckReport.model_validate(state.step("announce").result)
    assert report.complete
    assert sorted(report.acked) == ["billing", "mailer", "shipping"]
    assert report.sends == {"billing": 1, "shipping": 1, "mailer": 1}
    assert state.status is SagaStatus.COMPLETED


async def test_acks_for_another_services_sagas_are_ignored_and_plain_events_ask_for_none(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    async with open_db("sqlite", tmp_path) as db:
        bus = EventBus(MemoryTransport(broker))
        orchestrator = db.orchestrator([announce_saga(deadline=1)], bus=bus, service="orders")
        async with bus, orchestrator:
            foreign = Acknowledgement(key="s:x", saga_id="s", step="x", origin="billing", service="mailer")
            mine = Acknowledgement(key="s:y", saga_id="s", step="y", origin="orders", service="mailer")
            await bus.publish(foreign)
            await bus.publish(mine)
            await bus.publish(mine)  # a duplicate is stored once
            store: SagaStore = orchestrator.store
            for _ in range(200):
                if await store.acks("s", "y"):
                    break
                await asyncio.sleep(0.01)
            assert list(await store.acks("s", "y")) == ["mailer"]
            assert await store.acks("s", "x") == {}

        plain = EventBus(MemoryTransport(broker))
        received = Received(envelope_for(PriceChanged(sku="a", cents=1)), group="billing")
        assert ack_event(received) is None
        assert await acknowledge(plain, received) is False


def test_an_ack_step_needs_valid_distinct_services_and_a_positive_deadline() -> None:
    saga = Saga("s", PriceChange)

    def event(ctx: StepContext[PriceChange]) -> Event:
        return PriceChanged(sku="a", cents=1)

    with pytest.raises(SagaConfigError, match="at least one service"):
        ack_step(saga, "a", event=event, services=[])
    with pytest.raises(SagaConfigError, match="listed twice"):
        ack_step(saga, "a", event=event, services=["x", "x"])
    with pytest.raises(SagaConfigError, match="invalid group name"):
        ack_step(saga, "a", event=event, services=["no spaces"])
    with pytest.raises(SagaConfigError, match="deadline"):
        ack_step(saga, "a", event=event, services=["x"], deadline=0)
    step = ack_step(saga, "a", event=event, services=["x"], deadline=8)
    assert step.timeout > 8


async def test_an_ack_step_without_a_bus_fails_with_an_actionable_error(tmp_path: Path) -> None:
    async with (
        open_db("sqlite", tmp_path) as db,
        db.orchestrator([announce_saga(deadline=1)], config=FAST) as o,
    ):
        saga_id = await o.run("announce_price", PriceChange(sku="a", cents=1))
        state = await o.wait(saga_id, timeout=10)
    assert state.status is SagaStatus.COMPENSATED
    assert "pass bus=… and service=… to SagaOrchestrator" in (state.error or "")
