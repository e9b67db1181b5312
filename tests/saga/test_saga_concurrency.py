"""Two replicas on one database: they share the sagas and never drive the same one at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from pydantic import BaseModel
from saga_helpers import database, open_db, saga_record

from edgeway.saga import OrchestratorConfig, Saga, SagaStatus, StepContext


class Item(BaseModel):
    n: int


@database
async def test_two_instances_share_the_sagas_and_never_drive_one_at_once(kind: str, tmp_path: Path) -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    calls: Counter[tuple[str, str]] = Counter()
    by_instance: Counter[str] = Counter()

    def replica(label: str) -> Saga[Item]:
        saga = Saga("shared", Item)

        async def step(ctx: StepContext[Item]) -> None:
            if ctx.saga_id in running:
                overlaps.append(f"{ctx.saga_id}:{ctx.step} on {label}")
            running.add(ctx.saga_id)
            calls[(ctx.saga_id, ctx.step)] += 1
            by_instance[label] += 1
            try:
                await asyncio.sleep(0.005)
            finally:
                running.discard(ctx.saga_id)

        for name in ("one", "two", "three"):
            saga.add_step(name, step, timeout=10)
        return saga

    # Few slots each, so neither instance can take everything in one scan.
    config = OrchestratorConfig(lease=5, poll_interval=0.02, max_concurrent=4)
    async with open_db(kind, tmp_path) as db:
        a = db.orchestrator([replica("a")], config=config)
        b = db.orchestrator([replica("b")], config=config)
        async with a, b:
            # Started in a transaction, as a request handler would: unclaimed until a scan.
            async with a.store.sessions() as session, session.begin():
                ids = [await a.run("shared", Item(n=i), session=session) for i in range(30)]
            a.wake()
            b.wake()
            states = [await a.wait(saga_id, timeout=30) for saga_id in ids]

    assert all(s.status is SagaStatus.COMPLETED for s in states)
    assert overlaps == []
    assert len(calls) == 90
    assert set(calls.values()) == {1}
    assert by_instance["a"] > 0
    assert by_instance["b"] > 0


@database
async def test_concurrent_claims_never_hand_one_saga_to_two_instances(kind: str, tmp_path: Path) -> None:
    async with open_db(kind, tmp_path) as db:
        seed = db.store()
        await seed.create_tables()
        async with seed.sessions() as session, session.begin():
            for i in range(120):
                record = saga_record(f"s-{i:03d}", "race")
                await seed.insert(session, record, owner=None, lease=0)
        stores = [db.store() for _ in range(6)]
        claimed: dict[str, list[str]] = {f"i{n}": [] for n in range(len(stores))}
        for _ in range(20):
            rounds = await asyncio.gather(
                *(store.claim(["race"], owner, 30, 7) for store, owner in zip(stores, claimed, strict=True))
            )
            for owner, ids in zip(claimed, rounds, strict=True):
                claimed[owner].extend(ids)
            if sum(len(ids) for ids in claimed.values()) == 120:
                break

    everything = [saga_id for ids in claimed.values() for saga_id in ids]
    assert len(everything) == 120
    assert len(set(everything)) == 120
    assert sum(1 for ids in claimed.values() if ids) > 1
