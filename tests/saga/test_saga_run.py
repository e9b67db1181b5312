"""Running sagas to completion or compensation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from saga_helpers import QUICK_COMPENSATION, QUICK_RETRY, TINY_BACKOFF, Db, database, open_db

from edgeway.saga import (
    Retry,
    RetryableError,
    Saga,
    SagaStatus,
    StepContext,
    StepFailed,
    StepStatus,
)


class OrderData(BaseModel):
    order_id: str
    total_cents: int
    reservation_id: str | None = None
    payment_id: str | None = None


class Reservation(BaseModel):
    reservation_id: str
    items: int


class Journal:
    """What the steps did, in order."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.contexts: list[StepContext[OrderData]] = []

    def note(self, ctx: StepContext[OrderData], what: str) -> None:
        self.entries.append(what)
        self.contexts.append(ctx)


def order_saga(
    journal: Journal, *, fail_at: str | None = None, error: BaseException | None = None
) -> Saga[OrderData]:
    saga = Saga("place_order", OrderData)

    async def release(ctx: StepContext[OrderData]) -> None:
        journal.note(ctx, "release")

    async def refund(ctx: StepContext[OrderData]) -> None:
        journal.note(ctx, "refund")

    async def unconfirm(ctx: StepContext[OrderData]) -> None:
        journal.note(ctx, "unconfirm")

    def maybe_fail(step: str) -> None:
        if fail_at == step:
            raise error if error is not None else StepFailed(f"{step} refused")

    @saga.step(
        "reserve", compensate=release, timeout=2, retry=QUICK_RETRY, compensation_retry=QUICK_COMPENSATION
    )
    async def reserve(ctx: StepContext[OrderData]) -> Reservation:
        journal.note(ctx, "reserve")
        maybe_fail("reserve")
        ctx.data.reservation_id = f"r-{ctx.data.order_id}"
        return Reservation(reservation_id=ctx.data.reservation_id, items=3)

    @saga.step(
        "charge", compensate=refund, timeout=2, retry=QUICK_RETRY, compensation_retry=QUICK_COMPENSATION
    )
    async def charge(ctx: StepContext[OrderData]) -> dict[str, Any]:
        journal.note(ctx, "charge")
        maybe_fail("charge")
        ctx.data.payment_id = "p-1"
        return {"charged": ctx.data.total_cents}

    @saga.step(
        "confirm", compensate=unconfirm, timeout=2, retry=QUICK_RETRY, compensation_retry=QUICK_COMPENSATION
    )
    async def confirm(ctx: StepContext[OrderData]) -> None:
        journal.note(ctx, "confirm")
        maybe_fail("confirm")

    return saga


async def _run(db: Db, saga: Saga[Any], data: BaseModel) -> Any:
    async with db.orchestrator([saga]) as orchestrator:
        saga_id = await orchestrator.run(saga.name, data)
        return await orchestrator.wait(saga_id, timeout=10)


@database
async def test_steps_run_once_in_order_and_later_steps_see_earlier_results_and_data(
    kind: str, tmp_path: Path
) -> None:
    journal = Journal()
    async with open_db(kind, tmp_path) as db:
        state = await _run(db, order_saga(journal), OrderData(order_id="o-1", total_cents=990))

    assert state.status is SagaStatus.COMPLETED
    assert journal.entries == ["reserve", "charge", "confirm"]
    assert [s.status for s in state.steps] == [StepStatus.DONE] * 3
    assert [s.attempts for s in state.steps] == [1, 1, 1]
    confirm_ctx = journal.contexts[2]
    assert confirm_ctx.result_as(Reservation, "reserve") == Reservation(reservation_id="r-o-1", items=3)
    assert confirm_ctx.results["charge"] == {"charged": 990}
    assert confirm_ctx.data.payment_id == "p-1"
    assert state.data_as(OrderData) == OrderData(
        order_id="o-1", total_cents=990, reservation_id="r-o-1", payment_id="p-1"
    )
    assert state.step("reserve").result == {"reservation_id": "r-o-1", "items": 3}
    assert state.finished_at is not None
    assert state.owner is None
    assert state.error is None


@database
async def test_a_failing_step_compensates_itself_and_the_done_steps_in_reverse_order(
    kind: str, tmp_path: Path
) -> None:
    journal = Journal()
    async with open_db(kind, tmp_path) as db:
        state = await _run(
            db, order_saga(journal, fail_at="confirm"), OrderData(order_id="o-2", total_cents=5)
        )

    assert state.status is SagaStatus.COMPENSATED
    # The failed step is compensated too: its effect may have landed (see the timeout case).
    assert journal.entries == ["reserve", "charge", "confirm", "unconfirm", "refund", "release"]
    assert [s.status for s in state.steps] == [StepStatus.COMPENSATED] * 3
    assert state.error == "step 'confirm' failed: StepFailed: confirm refused"
    refund_ctx = journal.contexts[journal.entries.index("refund")]
    assert refund_ctx.compensating
    assert refund_ctx.result == {"charged": 5}
    assert refund_ctx.idempotency_key == f"{state.id}:charge:compensate"
    assert refund_ctx.error == state.error


@database
async def test_steps_after_the_failed_one_never_run_nor_compensate(kind: str, tmp_path: Path) -> None:
    journal = Journal()
    async with open_db(kind, tmp_path) as db:
        state = await _run(
            db, order_saga(journal, fail_at="charge"), OrderData(order_id="o-3", total_cents=5)
        )

    assert journal.entries == ["reserve", "charge", "refund", "release"]
    assert state.step("confirm").status is StepStatus.PENDING
    assert state.step("confirm").attempts == 0
    assert state.step("charge").failures == 1


async def test_a_retryable_failure_is_retried_with_backoff_and_a_fresh_copy_of_the_data(
    tmp_path: Path,
) -> None:
    saga = Saga("flaky", OrderData)
    seen: list[str | None] = []

    @saga.step("call", retry=Retry(attempts=4, backoff=TINY_BACKOFF), timeout=2)
    async def call(ctx: StepContext[OrderData]) -> int:
        seen.append(ctx.data.payment_id)
        ctx.data.payment_id = f"attempt-{ctx.attempt}"  # discarded when the attempt fails
        if ctx.attempt < 3:
            raise RetryableError("503 from payments")
        return ctx.attempt

    async with open_db("sqlite", tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-4", total_cents=1))

    assert state.status is SagaStatus.COMPLETED
    assert seen == [None, None, None]
    step = state.step("call")
    assert (step.attempts, step.failures, step.result) == (3, 2, 3)
    assert state.data["payment_id"] == "attempt-3"


async def test_an_exhausted_retry_budget_fails_the_step(tmp_path: Path) -> None:
    saga = Saga("exhausted", OrderData)
    undone: list[str] = []

    async def undo(ctx: StepContext[OrderData]) -> None:
        undone.append(ctx.step)

    @saga.step("call", compensate=undo, retry=Retry(attempts=2, backoff=TINY_BACKOFF), timeout=2)
    async def call(ctx: StepContext[OrderData]) -> None:
        raise ConnectionError("connection refused")

    async with open_db("sqlite", tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-5", total_cents=1))

    assert state.status is SagaStatus.COMPENSATED
    assert (state.step("call").attempts, state.step("call").failures) == (2, 2)
    assert "ConnectionError: connection refused" in (state.error or "")
    assert undone == ["call"]


async def test_an_error_the_retry_policy_does_not_list_is_not_retried(tmp_path: Path) -> None:
    saga = Saga("bug", OrderData)

    @saga.step("call", retry=Retry(attempts=5, backoff=TINY_BACKOFF), timeout=2)
    async def call(ctx: StepContext[OrderData]) -> None:
        raise KeyError("sku-9")

    async with open_db("sqlite", tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-6", total_cents=1))

    assert state.status is SagaStatus.COMPENSATED
    assert state.step("call").attempts == 1
    assert state.step("call").error == "KeyError: 'sku-9'"


@database
async def test_a_step_over_its_timeout_fails_and_is_compensated(kind: str, tmp_path: Path) -> None:
    saga = Saga("slow", OrderData)
    undone: list[str] = []

    async def undo(ctx: StepContext[OrderData]) -> None:
        undone.append(ctx.idempotency_key)

    @saga.step("call", compensate=undo, timeout=0.1, retry=QUICK_RETRY)
    async def call(ctx: StepContext[OrderData]) -> None:
        await asyncio.sleep(5)

    async with open_db(kind, tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-7", total_cents=1))

    assert state.status is SagaStatus.COMPENSATED
    assert state.step("call").attempts == 1  # a timeout is not retried unless Retry.on says so
    assert "did not finish within its timeout of 0.1 s" in (state.error or "")
    assert undone == [f"{state.id}:call:compensate"]


async def test_a_compensation_that_fails_transiently_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    saga = Saga("undo_flaky", OrderData)
    tries: list[int] = []

    async def undo(ctx: StepContext[OrderData]) -> None:
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("inventory down")

    @saga.step("reserve", compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    async def reserve(ctx: StepContext[OrderData]) -> None:
        return None

    @saga.step("charge", timeout=2)
    async def charge(ctx: StepContext[OrderData]) -> None:
        raise StepFailed("card declined")

    async with open_db("sqlite", tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-8", total_cents=1))

    assert state.status is SagaStatus.COMPENSATED
    assert tries == [1, 2, 3]
    step = state.step("reserve")
    assert (step.compensation_attempts, step.compensation_failures) == (3, 2)
    # charge has no compensation: left as failed, nothing to run
    assert state.step("charge").status is StepStatus.FAILED


@database
async def test_a_compensation_that_keeps_failing_marks_the_saga_failed_and_retry_resumes_it(
    kind: str, tmp_path: Path
) -> None:
    saga = Saga("undo_broken", OrderData)
    broken = True
    undone: list[str] = []

    async def undo(ctx: StepContext[OrderData]) -> None:
        if broken:
            raise RuntimeError("inventory rejects the release")
        undone.append(ctx.step)

    @saga.step("reserve", compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    async def reserve(ctx: StepContext[OrderData]) -> None:
        return None

    @saga.step("charge", compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    async def charge(ctx: StepContext[OrderData]) -> None:
        raise StepFailed("card declined")

    async with open_db(kind, tmp_path) as db, db.orchestrator([saga]) as orchestrator:
        saga_id = await orchestrator.run("undo_broken", OrderData(order_id="o-9", total_cents=1))
        state = await orchestrator.wait(saga_id, timeout=10)

        assert state.status is SagaStatus.FAILED
        assert state.needs_attention
        assert state.error is not None
        assert state.error.startswith(
            "compensation of step 'charge' failed after 3 attempts: "
            "RuntimeError: inventory rejects the release"
        )
        assert "(it was compensating because step 'charge' failed: StepFailed: card declined)" in state.error
        assert state.step("charge").status is StepStatus.COMPENSATION_FAILED
        assert state.step("reserve").status is StepStatus.DONE  # not reached: reverse order stops
        assert [s.id for s in await orchestrator.needs_attention()] == [saga_id]

        broken = False
        await orchestrator.retry(saga_id)
        state = await orchestrator.wait(saga_id, timeout=10)

    assert state.status is SagaStatus.COMPENSATED
    assert undone == ["charge", "reserve"]


async def test_a_step_failure_can_carry_a_result_that_is_stored(tmp_path: Path) -> None:
    saga = Saga("with_result", OrderData)

    @saga.step("check", timeout=2)
    async def check(ctx: StepContext[OrderData]) -> None:
        raise StepFailed("fraud score too high", result={"score": 97})

    async with open_db("sqlite", tmp_path) as db:
        state = await _run(db, saga, OrderData(order_id="o-10", total_cents=1))

    assert state.step("check").result == {"score": 97}
    assert state.step("check").status is StepStatus.FAILED


async def test_a_step_that_breaks_the_data_or_returns_no_json_fails_with_a_clear_error(
    tmp_path: Path,
) -> None:
    saga = Saga("bad_output", OrderData)

    @saga.step("corrupt", timeout=2)
    async def corrupt(ctx: StepContext[OrderData]) -> None:
        ctx.data.total_cents = "a lot"  # type: ignore[assignment]

    other = Saga("bad_result", OrderData)

    @other.step("opaque", timeout=2)
    async def opaque(ctx: StepContext[OrderData]) -> object:
        return object()

    async with open_db("sqlite", tmp_path) as db, db.orchestrator([saga, other]) as orchestrator:
        first = await orchestrator.run("bad_output", OrderData(order_id="o-11", total_cents=1))
        second = await orchestrator.run("bad_result", OrderData(order_id="o-12", total_cents=1))
        corrupted = await orchestrator.wait(first, timeout=10)
        unstorable = await orchestrator.wait(second, timeout=10)

    assert corrupted.status is SagaStatus.COMPENSATED
    assert "SagaDataError: step 'corrupt' left saga data that does not validate as OrderData" in (
        corrupted.error or ""
    )
    assert corrupted.data["total_cents"] == 1
    assert "SagaDataError: the result of step 'opaque' cannot be stored as JSON" in (unstorable.error or "")
