"""Declaring sagas and using the orchestrator's API: clear errors, idempotent starts, queries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel
from saga_helpers import database, open_db
from sqlalchemy.ext.asyncio import create_async_engine

from edgeway.bus.bus import EventBus
from edgeway.bus.memory import MemoryBroker, MemoryTransport
from edgeway.saga import (
    OrchestratorConfig,
    Retry,
    RetryableError,
    Saga,
    SagaConfigError,
    SagaDataError,
    SagaNotFoundError,
    SagaOrchestrator,
    SagaStateError,
    SagaStatus,
    SagaTimeoutError,
    StepContext,
)


class Order(BaseModel):
    order_id: str
    cents: int = 0


class Receipt(BaseModel):
    number: int


async def noop(ctx: StepContext[Order]) -> None:
    return None


def one_step(name: str = "single", action=noop) -> Saga[Order]:  # type: ignore[no-untyped-def]
    saga = Saga(name, Order)
    saga.add_step("only", action, timeout=5)
    return saga


def test_saga_and_step_declarations_are_checked() -> None:
    with pytest.raises(SagaConfigError, match="invalid saga name"):
        Saga("has space", Order)
    with pytest.raises(SagaConfigError, match="pydantic BaseModel"):
        Saga("x", dict)  # type: ignore[type-var]
    saga = Saga("x", Order)
    saga.add_step("a", noop)
    with pytest.raises(SagaConfigError, match="already has a step named 'a'"):
        saga.add_step("a", noop)
    with pytest.raises(SagaConfigError, match="invalid step name"):
        saga.add_step("a/b", noop)
    with pytest.raises(SagaConfigError, match="timeouts must be > 0"):
        saga.add_step("b", noop, timeout=0)
    with pytest.raises(SagaConfigError, match="at least 1"):
        Retry(attempts=0)
    assert Retry().retries(RetryableError("x"))
    assert Retry().retries(ConnectionResetError())
    assert not Retry().retries(ValueError())
    with pytest.raises(SagaConfigError, match="no step 'zz'"):
        saga.index("zz")


def test_data_is_validated_into_the_sagas_model() -> None:
    saga = one_step()
    assert saga.validate_data({"order_id": "o-1", "cents": "5"}) == Order(order_id="o-1", cents=5)
    with pytest.raises(SagaDataError, match="does not validate as Order"):
        saga.validate_data({"cents": 5})


def test_the_step_context_gives_stable_keys_headers_and_typed_results() -> None:
    def ctx(compensating: bool) -> StepContext[Order]:
        return StepContext(
            saga_id="S1",
            saga_name="x",
            step="charge",
            attempt=2,
            data=Order(order_id="o"),
            results={"charge": {"number": 7}, "reserve": {"bad": True}},
            compensating=compensating,
            request_id="r-1",
            traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            started_at=0.0,
        )

    action, compensation = ctx(False), ctx(True)
    assert action.key == compensation.key == "S1:charge"
    assert action.idempotency_key == "S1:charge"
    assert compensation.idempotency_key == "S1:charge:compensate"
    assert compensation.headers["Idempotency-Key"] == "S1:charge:compensate"
    assert action.trace_headers == {"x-request-id": "r-1", "traceparent": action.traceparent}
    assert compensation.result_as(Receipt) == Receipt(number=7)
    assert compensation.result_as(Receipt, "missing") is None
    with pytest.raises(SagaDataError, match="result of step 'reserve' does not validate as Receipt"):
        compensation.result_as(Receipt, "reserve")
    with pytest.raises(SagaConfigError, match="transactional=True"):
        _ = action.session
    with pytest.raises(SagaConfigError, match="pass bus="):
        _ = action.acks


def test_orchestrator_configuration_errors_are_reported_before_anything_runs() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(SagaConfigError, match="lease"):
        OrchestratorConfig(lease=0)
    with pytest.raises(SagaConfigError, match="max_concurrent"):
        OrchestratorConfig(max_concurrent=0)
    with pytest.raises(SagaConfigError, match="two sagas are named 'single'"):
        SagaOrchestrator(engine, [one_step(), one_step()])
    with pytest.raises(SagaConfigError, match="pass service="):
        SagaOrchestrator(engine, [one_step()], bus=EventBus(MemoryTransport(MemoryBroker())))


async def test_running_needs_a_started_orchestrator_a_known_saga_and_valid_data(tmp_path: Path) -> None:
    async with open_db("sqlite", tmp_path) as db:
        empty = db.orchestrator([Saga("empty", Order)])
        with pytest.raises(SagaConfigError, match="saga 'empty' has no steps"):
            await empty.start()
        orchestrator = db.orchestrator([one_step()])
        with pytest.raises(SagaStateError, match="start the orchestrator"):
            await orchestrator.run("single", Order(order_id="o"))
        async with orchestrator:
            with pytest.raises(SagaNotFoundError, match="no saga named 'nope' is registered"):
                await orchestrator.run("nope", Order(order_id="o"))
            with pytest.raises(SagaDataError):
                await orchestrator.run("single", {"cents": 1})
            with pytest.raises(SagaNotFoundError):
                await orchestrator.get("missing")


@database
async def test_a_start_with_a_saga_id_is_idempotent(kind: str, tmp_path: Path) -> None:
    calls: list[str] = []

    async def count(ctx: StepContext[Order]) -> None:
        calls.append(ctx.saga_id)

    async with (
        open_db(kind, tmp_path) as db,
        db.orchestrator([one_step("a", count), one_step("b")]) as orchestrator,
    ):
        first = await orchestrator.run("a", Order(order_id="o-1"), saga_id="order-o-1")
        await orchestrator.wait(first, timeout=10)
        second = await orchestrator.run("a", Order(order_id="o-1"), saga_id="order-o-1")
        with pytest.raises(SagaStateError, match="already used by a 'a' saga, not 'b'"):
            await orchestrator.run("b", Order(order_id="o-1"), saga_id="order-o-1")
    assert first == second == "order-o-1"
    assert calls == ["order-o-1"]


@database
async def test_a_saga_started_in_a_rolled_back_transaction_never_exists(kind: str, tmp_path: Path) -> None:
    calls: list[str] = []

    async def count(ctx: StepContext[Order]) -> None:
        calls.append(ctx.saga_id)

    async with open_db(kind, tmp_path) as db, db.orchestrator([one_step("a", count)]) as orchestrator:
        async with orchestrator.store.sessions() as session, session.begin():
            dropped = await orchestrator.run("a", Order(order_id="o-1"), session=session)
            await session.rollback()
        async with orchestrator.store.sessions() as session, session.begin():
            kept = await orchestrator.run("a", Order(order_id="o-2"), session=session)
        orchestrator.wake()
        state = await orchestrator.wait(kept, timeout=10)
        with pytest.raises(SagaNotFoundError):
            await orchestrator.get(dropped)
    assert state.status is SagaStatus.COMPLETED
    assert calls == [kept]


async def test_wait_gives_up_after_its_timeout_and_queries_find_stuck_sagas(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def blocked(ctx: StepContext[Order]) -> None:
        await gate.wait()

    async with open_db("sqlite", tmp_path) as db:
        config = OrchestratorConfig(poll_interval=0.05, stop_grace=0)
        async with db.orchestrator([one_step("blocked", blocked), one_step()], config=config) as orchestrator:
            stuck = await orchestrator.run("blocked", Order(order_id="o-1"))
            done = await orchestrator.run("single", Order(order_id="o-2"))
            await orchestrator.wait(done, timeout=10)
            with pytest.raises(SagaTimeoutError, match=r"still running after 0\.2 s"):
                await orchestrator.wait(stuck, timeout=0.2)
            await asyncio.sleep(0.2)
            assert [s.id for s in await orchestrator.needs_attention(stuck_after=0.1)] == [stuck]
            assert [s.id for s in await orchestrator.list(stuck_after=0.1)] == [stuck]
            assert [s.id for s in await orchestrator.list(statuses=[SagaStatus.COMPLETED])] == [done]
            assert {s.id for s in await orchestrator.list()} == {stuck, done}
            assert [s.id for s in await orchestrator.list(name="single")] == [done]
            assert await orchestrator.needs_attention(stuck_after=60) == []
            assert await orchestrator.healthy()
            gate.set()
            await orchestrator.wait(stuck, timeout=10)
        assert not await orchestrator.healthy()
        with pytest.raises(SagaStateError, match="is completed, not failed"):
            await db.store().retry(done)
        with pytest.raises(SagaNotFoundError):
            await db.store().retry("missing")


@database
async def test_a_transactional_step_commits_its_writes_with_the_step_and_rolls_back_on_failure(
    kind: str, tmp_path: Path
) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

    metadata = MetaData()
    orders = Table(
        f"orders_{tmp_path.name[-8:]}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("ref", String(32)),
    )
    saga = Saga("local", Order)

    @saga.step("write", transactional=True, timeout=5)
    async def write(ctx: StepContext[Order]) -> int:
        await ctx.session.execute(insert(orders), [{"ref": ctx.data.order_id}])
        if ctx.data.cents < 0:
            raise ValueError("negative total")
        ctx.data.cents += 1
        return 1

    async with open_db(kind, tmp_path) as db:
        engine = db.engine()
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        try:
            async with db.orchestrator([saga]) as orchestrator:
                good = await orchestrator.wait(
                    await orchestrator.run("local", Order(order_id="ok", cents=1)), timeout=10
                )
                bad = await orchestrator.wait(
                    await orchestrator.run("local", Order(order_id="bad", cents=-1)), timeout=10
                )
            async with engine.connect() as conn:
                refs = list((await conn.execute(select(orders.c.ref))).scalars())
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.drop_all)

    assert refs == ["ok"]
    assert good.status is SagaStatus.COMPLETED
    assert good.data["cents"] == 2
    assert good.step("write").result == 1
    assert bad.status is SagaStatus.COMPENSATED
    assert bad.step("write").error == "ValueError: negative total"


@database
async def test_purge_deletes_old_finished_sagas_and_keeps_failed_and_running_ones(
    kind: str, tmp_path: Path
) -> None:
    gate = asyncio.Event()

    async def blocked(ctx: StepContext[Order]) -> None:
        await gate.wait()

    async with open_db(kind, tmp_path) as db:
        config = OrchestratorConfig(poll_interval=0.05, stop_grace=0)
        async with db.orchestrator([one_step(), one_step("blocked", blocked)], config=config) as orchestrator:
            done = await orchestrator.run("single", Order(order_id="o-1"))
            running = await orchestrator.run("blocked", Order(order_id="o-2"))
            await orchestrator.wait(done, timeout=10)
            store = orchestrator.store
            assert await store.purge(older_than=3600) == 0  # too recent
            assert await store.purge(older_than=0) == 1
            with pytest.raises(SagaNotFoundError):
                await orchestrator.get(done)
            assert (await orchestrator.get(running)).status is SagaStatus.RUNNING
            gate.set()
