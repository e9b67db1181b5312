"""Resuming after a crash, a graceful stop or a lost lease: nothing done twice, order kept."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel
from saga_helpers import database, open_db, saga_record
from saga_ledger import Ledger, crash_saga
from sqlalchemy import update

from edgeway.saga import OrchestratorConfig, Saga, SagaStatus, StepContext, StepStatus
from edgeway.saga.errors import SagaLeaseLostError

WORKER = Path(__file__).with_name("saga_worker.py")


async def _kill_worker_at(
    url: str, prefix: str, ledger: Path, marker: Path, hang_at: str, fail_at: str = ""
) -> str:
    """Run the worker until it hangs at ``hang_at`` (effect applied, not recorded); SIGKILL it."""
    args = [sys.executable, str(WORKER), url, prefix, str(ledger), str(marker), hang_at]
    if fail_at:
        args.append(fail_at)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() or not marker.read_text():
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"the worker exited early ({process.returncode}): {err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the worker never reached the step it should hang in")
            await asyncio.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
    return marker.read_text()


@database
async def test_a_saga_killed_mid_step_resumes_in_another_process_without_repeating_done_steps(
    kind: str, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    async with open_db(kind, tmp_path) as db:
        saga_id = await _kill_worker_at(db.url, db.prefix, ledger.path, tmp_path / "marker", "b")
        assert ledger.calls() == ["a", "b"]

        async with db.orchestrator([crash_saga(ledger)]) as orchestrator:
            state = await orchestrator.wait(saga_id, timeout=20)

    assert state.status is SagaStatus.COMPLETED
    # a was recorded done: never called again. b was in flight: called again with the same key,
    # and the ledger (like a service honouring Idempotency-Key) applied it once.
    assert ledger.calls() == ["a", "b", "b", "c"]
    assert ledger.effects() == [f"{saga_id}:a", f"{saga_id}:b", f"{saga_id}:c"]
    b = state.step("b")
    assert (b.attempts, b.interruptions, b.failures) == (2, 1, 0)
    assert state.step("a").attempts == 1


@database
async def test_a_saga_killed_mid_compensation_resumes_compensating_in_reverse_order(
    kind: str, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    async with open_db(kind, tmp_path) as db:
        saga_id = await _kill_worker_at(
            db.url, db.prefix, ledger.path, tmp_path / "marker", "b:compensate", fail_at="c"
        )
        assert ledger.calls() == ["a", "b", "c", "c:compensate", "b:compensate"]

        async with db.orchestrator([crash_saga(ledger, fail_at="c")]) as orchestrator:
            state = await orchestrator.wait(saga_id, timeout=20)

    assert state.status is SagaStatus.COMPENSATED
    assert ledger.calls() == ["a", "b", "c", "c:compensate", "b:compensate", "b:compensate", "a:compensate"]
    assert ledger.effects() == [
        f"{saga_id}:{key}" for key in ("a", "b", "c", "c:compensate", "b:compensate", "a:compensate")
    ]
    assert [s.status for s in state.steps] == [StepStatus.COMPENSATED] * 3
    assert state.step("b").interruptions == 1


class Item(BaseModel):
    n: int


def _gated_saga(gate: asyncio.Event, calls: list[str]) -> Saga[Item]:
    saga = Saga("gated", Item)

    @saga.step("first", timeout=10)
    async def first(ctx: StepContext[Item]) -> None:
        calls.append("first")

    @saga.step("second", timeout=10)
    async def second(ctx: StepContext[Item]) -> None:
        calls.append("second")
        await gate.wait()

    @saga.step("third", timeout=10)
    async def third(ctx: StepContext[Item]) -> None:
        calls.append("third")

    return saga


async def test_a_graceful_stop_finishes_the_running_step_and_hands_the_saga_over_at_once(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    calls: list[str] = []
    async with open_db("sqlite", tmp_path) as db:
        # A long lease: the second instance could only take over this fast if the first released it.
        config = OrchestratorConfig(lease=60, poll_interval=0.05, stop_grace=5)
        first = db.orchestrator([_gated_saga(gate, calls)], config=config)
        await first.start()
        saga_id = await first.run("gated", Item(n=1))
        while calls != ["first", "second"]:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(first.stop())
        await asyncio.sleep(0.1)
        gate.set()  # the running step finishes within the grace period
        await stopping
        assert (await first.get(saga_id)).owner is None

        async with db.orchestrator([_gated_saga(gate, calls)], config=config) as second:
            state = await second.wait(saga_id, timeout=5)

    assert state.status is SagaStatus.COMPLETED
    assert calls == ["first", "second", "third"]
    assert state.step("second").interruptions == 0


async def test_a_step_interrupted_more_often_than_allowed_fails_instead_of_looping(tmp_path: Path) -> None:
    gate = asyncio.Event()
    calls: list[str] = []
    async with open_db("sqlite", tmp_path) as db:
        first = db.orchestrator([_gated_saga(gate, calls)], config=OrchestratorConfig(stop_grace=0))
        await first.start()
        saga_id = await first.run("gated", Item(n=1))
        while calls != ["first", "second"]:
            await asyncio.sleep(0.01)
        await first.stop()  # no grace: "second" is cut off mid-step and stays running

        strict = OrchestratorConfig(poll_interval=0.05, max_interruptions=0)
        async with db.orchestrator([_gated_saga(gate, calls)], config=strict) as second:
            state = await second.wait(saga_id, timeout=5)

    assert state.status is SagaStatus.COMPENSATED
    assert calls == ["first", "second"]
    assert state.step("second").status is StepStatus.FAILED
    assert "was interrupted 1 times" in (state.step("second").error or "")


@database
async def test_a_saga_held_under_a_live_lease_is_left_alone_until_the_lease_expires(
    kind: str, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    calls: list[str] = []
    async with open_db(kind, tmp_path) as db:
        holder = db.orchestrator(
            # 3 s, not 1 s: under load the claim below can come more than a second after the
            # holder's last renewal, and then taking the saga over is right, not a bug.
            [_gated_saga(gate, calls)],
            config=OrchestratorConfig(lease=3.0, stop_grace=0),
        )
        await holder.start()
        saga_id = await holder.run("gated", Item(n=1))
        while calls != ["first", "second"]:
            await asyncio.sleep(0.01)
        # The holder freezes (no renewals, no writes) as if its process hung: stop its loops only.
        await holder._loops.stop()

        async with db.orchestrator([_gated_saga(gate, calls)]) as other:
            await asyncio.sleep(0.5)
            assert calls == ["first", "second"]  # lease still valid: not taken
            while (await other.get(saga_id)).owner != other.instance_id:
                await asyncio.sleep(0.02)
            gate.set()  # both the frozen holder's and the new owner's "second" finish now
            state = await other.wait(saga_id, timeout=10)
            # the lease ran out: the other instance resumed "second" and finished the saga
            assert state.status is SagaStatus.COMPLETED
            assert calls.count("third") == 1
            assert state.step("second").interruptions == 1
            assert state.owner is None
        await asyncio.sleep(0.1)
        assert calls.count("third") == 1  # the frozen holder's late "second" could not write
        await holder.stop(grace=0)


@database
async def test_claims_respect_live_leases_and_fence_out_the_previous_holder(
    kind: str, tmp_path: Path
) -> None:
    async with open_db(kind, tmp_path) as db:
        store = db.store()
        await store.create_tables()
        record = saga_record("s-1", "crashy")
        async with store.sessions() as session, session.begin():
            await store.insert(session, record, owner="a", lease=0.3)

        assert await store.claim(["crashy"], "b", 30, 10) == []  # a's lease is live
        await asyncio.sleep(0.35)
        assert await store.claim(["other"], "b", 30, 10) == []  # b does not know this saga
        assert await store.claim(["crashy"], "b", 30, 10) == ["s-1"]

        with pytest.raises(SagaLeaseLostError):  # a's late write is refused
            await store.save(record, "a", saga={"current_step": 1})
        with pytest.raises(SagaLeaseLostError):  # the right owner with a stale version too
            await store.save(record, "b", saga={"current_step": 1})
        fresh = await store.load("s-1")
        await store.save(fresh, "b", steps={"a": {"status": StepStatus.RUNNING}})
        assert (await store.state("s-1")).step("a").status is StepStatus.RUNNING
        assert await store.renew("a", ["s-1"], 30) == {"s-1"}  # lost to b
        assert await store.renew("b", ["s-1"], 30) == set()
        await store.save(await store.load("s-1"), "b", saga={"status": SagaStatus.COMPLETED, "owner": None})
        assert await store.renew("b", ["s-1"], 30) == set()  # finished, not lost


async def test_an_instance_that_loses_its_lease_stops_driving_the_saga_at_once(tmp_path: Path) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    saga = Saga("stolen", Item)

    @saga.step("long", timeout=30)
    async def long(ctx: StepContext[Item]) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with open_db("sqlite", tmp_path) as db:
        config = OrchestratorConfig(lease=0.3, poll_interval=0.05)
        async with db.orchestrator([saga], config=config) as orchestrator:
            saga_id = await orchestrator.run("stolen", Item(n=1))
            await started.wait()
            # Another instance took the saga over (as after this one stalled past its lease).
            store = orchestrator.store
            sagas = store.tables.sagas
            async with store.sessions() as session, session.begin():
                await session.execute(
                    update(sagas)
                    .where(sagas.c.id == saga_id)
                    .values(owner="thief", lease_until=time.time() + 60, version=sagas.c.version + 1)
                )
            await asyncio.wait_for(cancelled.wait(), timeout=2)
            state = await orchestrator.get(saga_id)

    assert state.owner == "thief"
    assert state.status is SagaStatus.RUNNING
    assert state.step("long").status is StepStatus.RUNNING  # nothing written after the loss
