"""Steps after the pivot (``retriable=True``): retried until they succeed, never compensated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from saga_helpers import QUICK_COMPENSATION, QUICK_RETRY, TINY_BACKOFF, Db, database, open_db

from edgeway.saga import (
    OrchestratorConfig,
    Retry,
    Saga,
    SagaConfigError,
    SagaStatus,
    StepContext,
    StepFailed,
    StepStatus,
)


class Order(BaseModel):
    order_id: str


def pivot_saga(journal: list[str], confirm_failures: list[BaseException | None]) -> Saga[Order]:
    """reserve and charge compensatable; confirm after the pivot fails as ``confirm_failures`` say."""
    saga = Saga("pivot_order", Order)

    async def reserve(ctx: StepContext[Order]) -> None:
        journal.append("reserve")

    async def release(ctx: StepContext[Order]) -> None:
        journal.append("release")

    async def charge(ctx: StepContext[Order]) -> None:
        journal.append("charge")

    async def refund(ctx: StepContext[Order]) -> None:
        journal.append("refund")

    async def confirm(ctx: StepContext[Order]) -> str:
        journal.append("confirm")
        failure = confirm_failures.pop(0) if confirm_failures else None
        if isinstance(failure, TimeoutError):
            await asyncio.sleep(1)  # longer than the step's timeout
        elif failure is not None:
            raise failure
        return "committed"

    common: dict[str, Any] = {"retry": QUICK_RETRY, "compensation_retry": QUICK_COMPENSATION}
    saga.add_step("reserve", reserve, compensate=release, timeout=2, **common)
    saga.add_step("charge", charge, compensate=refund, timeout=2, **common)
    # Budget of 2 attempts: a compensatable step would give up after the second failure.
    budget = Retry(attempts=2, backoff=TINY_BACKOFF)
    saga.add_step("confirm", confirm, timeout=0.2, retry=budget, retriable=True)
    return saga


async def _run(db: Db, saga: Saga[Any], data: BaseModel) -> Any:
    async with db.orchestrator([saga]) as orchestrator:
        saga_id = await orchestrator.run(saga.name, data)
        return await orchestrator.wait(saga_id, timeout=15)


@database
async def test_a_step_after_the_pivot_is_retried_past_its_budget_and_timeouts_and_never_compensated(
    kind: str, tmp_path: Path
) -> None:
    journal: list[str] = []
    failures: list[BaseException | None] = [
        TimeoutError(),
        ConnectionError("inventory unreachable"),
        StepFailed("409 from a confused peer"),
        ValueError("anything at all"),
        TimeoutError(),
    ]
    async with open_db(kind, tmp_path) as db:
        state = await _run(db, pivot_saga(journal, failures), Order(order_id="o-1"))

    assert state.status is SagaStatus.COMPLETED
    assert journal == ["reserve", "charge"] + ["confirm"] * 6
    confirm = state.step("confirm")
    assert (confirm.status, confirm.attempts, confirm.failures) == (StepStatus.DONE, 6, 5)
    assert confirm.result == "committed"


@database
async def test_before_the_pivot_the_same_failure_still_compensates(kind: str, tmp_path: Path) -> None:
    journal: list[str] = []
    saga = Saga("no_pivot", Order)

    async def step(ctx: StepContext[Order]) -> None:
        journal.append(ctx.step)
        if ctx.step == "confirm":
            await asyncio.sleep(1)

    async def undo(ctx: StepContext[Order]) -> None:
        journal.append(f"undo {ctx.step}")

    saga.add_step("charge", step, compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    saga.add_step("confirm", step, timeout=0.2, retry=Retry(attempts=1))
    async with open_db(kind, tmp_path) as db:
        state = await _run(db, saga, Order(order_id="o-2"))

    assert state.status is SagaStatus.COMPENSATED
    assert journal == ["charge", "confirm", "undo charge"]


async def test_a_retriable_step_cut_short_more_often_than_allowed_is_resumed_not_failed(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    journal: list[str] = []

    def build() -> Saga[Order]:
        saga = Saga("gated_pivot", Order)

        async def charge(ctx: StepContext[Order]) -> None:
            journal.append("charge")

        async def refund(ctx: StepContext[Order]) -> None:
            journal.append("refund")

        async def confirm(ctx: StepContext[Order]) -> None:
            journal.append("confirm")
            await gate.wait()

        saga.add_step("charge", charge, compensate=refund, timeout=2)
        saga.add_step("confirm", confirm, timeout=5, retriable=True)
        return saga

    async with open_db("sqlite", tmp_path) as db:
        first = db.orchestrator([build()], config=OrchestratorConfig(stop_grace=0))
        await first.start()
        saga_id = await first.run("gated_pivot", Order(order_id="o-3"))
        while journal != ["charge", "confirm"]:
            await asyncio.sleep(0.01)
        await first.stop()  # no grace: "confirm" is cut off mid-step and stays running

        gate.set()
        strict = OrchestratorConfig(poll_interval=0.05, max_interruptions=0)
        async with db.orchestrator([build()], config=strict) as second:
            state = await second.wait(saga_id, timeout=5)

    assert state.status is SagaStatus.COMPLETED
    assert journal == ["charge", "confirm", "confirm"]
    assert state.step("confirm").interruptions == 1


async def _noop(ctx: StepContext[Order]) -> None:
    return None


def test_a_retriable_step_cannot_have_a_compensation() -> None:
    saga = Saga("bad", Order)
    with pytest.raises(SagaConfigError, match="retriable step cannot have a compensation"):
        saga.add_step("confirm", _noop, compensate=_noop, retriable=True)


@pytest.mark.parametrize("compensate", [_noop, None], ids=["compensatable", "pivot"])
def test_no_step_but_a_retriable_one_may_follow_a_retriable_step(compensate: Any) -> None:
    saga = Saga("bad", Order)
    saga.add_step("confirm", _noop, retriable=True)
    with pytest.raises(SagaConfigError, match="comes after the retriable step 'confirm'"):
        saga.add_step("ship", _noop, compensate=compensate)
    saga.add_step("notify", _noop, retriable=True)
    assert [s.name for s in saga.steps] == ["confirm", "notify"]
