"""Idempotent consumers: a message's effects are applied once, however often it arrives.

The inbox records ``(group, message id)`` in the same database transaction as the handler's
writes. A redelivered or re-published message finds its id and is acknowledged without running
the handler; a handler that fails rolls back both its writes and the record, so the retry runs
it again from clean state.

Handlers get the transaction's session::

    inbox = Inbox(sessions, metadata)

    @bus.subscribe(OrderPlaced, group="billing", inbox=inbox)
    async def bill(event: OrderPlaced, session: AsyncSession) -> None:
        session.add(Invoice(order_id=event.order_id, ...))

For throughput a whole fetched batch runs in one transaction (one commit instead of one per
message; this is what lets the bus reach its events/s target on SQLite). If any handler in the
batch fails, the batch is rolled back and replayed one message per transaction, so only the
failing message is retried: handlers must therefore keep side effects outside the database
idempotent (they may run twice within one delivery).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Column, Float, MetaData, String, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edgeway.bus.bulk import BulkInsert, InLookup
from edgeway.bus.bus import Finish, Job, run_jobs


def inbox_table(metadata: MetaData, name: str = "edgeway_inbox") -> Table:
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return Table(
        name,
        metadata,
        Column("consumer_group", String(64), primary_key=True),
        Column("message_id", String(128), primary_key=True),
        Column("processed_at", Float, nullable=False),
    )


class Inbox:
    """A :class:`~edgeway.bus.bus.Runner` that makes handlers idempotent. See the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        metadata: MetaData,
        *,
        table_name: str = "edgeway_inbox",
    ) -> None:
        self.sessions = sessions
        self.table = inbox_table(metadata, table_name)
        self._insert = BulkInsert(self.table, ("consumer_group", "message_id", "processed_at"))
        self._lookup = InLookup(self.table, key="message_id", scope="consumer_group")

    async def run(self, group: str, jobs: Sequence[Job], finish: Finish) -> list[BaseException | None]:
        if len(jobs) > 1:
            try:
                return await self._batch(group, jobs, finish)
            except Exception:
                # A handler failed or a concurrent member won a message id: the whole batch
                # rolled back; redo it one message per transaction to isolate the culprit.
                pass
        return [await self._one(group, job, finish) for job in jobs]

    async def _seen(self, session: AsyncSession, group: str, ids: Sequence[str]) -> set[str]:
        return await self._lookup.existing(session, group, ids)

    async def _batch(self, group: str, jobs: Sequence[Job], finish: Finish) -> list[BaseException | None]:
        async with self.sessions() as session, session.begin():
            seen = await self._seen(session, group, [j.message_id for j in jobs])
            fresh: list[Job] = []
            for job in jobs:
                if job.message_id not in seen:
                    seen.add(job.message_id)
                    fresh.append(job)
            await run_jobs(fresh, finish, session)
            now = time.time()
            await self._insert.execute(session, [(group, job.message_id, now) for job in fresh])
        return [None] * len(jobs)

    async def _one(self, group: str, job: Job, finish: Finish) -> BaseException | None:
        try:
            async with self.sessions() as session, session.begin():
                if await self._seen(session, group, [job.message_id]):
                    return None
                await run_jobs([job], finish, session)
                await self._insert.execute(session, [(group, job.message_id, time.time())])
        except IntegrityError:
            return None  # another member committed this message first; its effects stand
        except Exception as exc:
            return exc
        return None

    async def processed(self, group: str, message_id: str) -> bool:
        async with self.sessions() as session:
            return bool(await self._seen(session, group, [message_id]))
