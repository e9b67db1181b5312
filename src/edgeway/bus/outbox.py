"""Transactional outbox: events written in the same transaction as the state they report.

``await outbox.add(session, event)`` inserts a row in the caller's transaction, so the event
exists if and only if the business change committed. :class:`OutboxRelay` publishes pending rows
in id order, in batches with a window of outstanding broker confirmations, and marks them sent.

Failure semantics: a row is marked sent only after the broker confirmed it. If the relay dies
between the confirmation and the mark, the next relay publishes the row again with the same
message id (the row's event id, fixed at ``add``): NATS drops it inside its duplicate window,
and consumers with an inbox drop it on any broker. Nothing is lost; nothing is applied twice.

On PostgreSQL the relay locks its batch with ``FOR UPDATE SKIP LOCKED`` while publishing, so several
relays (one per service replica) share the work without publishing a row twice. SQLite has one
writer at a time and no row locks: run one relay per database (the normal case for a file per
service); there the relay reads, publishes and marks in separate steps so it never holds a
transaction across network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from edgeway.bus import tracing
from edgeway.bus.bulk import BulkInsert, InList
from edgeway.bus.bus import EventBus
from edgeway.bus.errors import BusError
from edgeway.bus.events import Envelope, Event, envelope_for

log = logging.getLogger("edgeway.bus.outbox")

_COLUMNS = ("event_id", "channel", "event_type", "event_key", "headers", "payload", "created_at")


def _envelopes(rows: Sequence[Any]) -> list[Envelope]:
    # Headers are read as JSON text and parsed once per distinct text: the events of one
    # add_many share theirs (~1.5 µs per row saved against the JSON type's json.loads each).
    # asyncpg decodes JSON columns itself and hands over dicts.
    parsed: dict[str, dict[str, str]] = {}
    out = []
    for row in rows:
        raw = row.headers
        headers: dict[str, str] | None
        if isinstance(raw, dict):
            headers = raw
        else:
            headers = parsed.get(raw)
            if headers is None:
                headers = parsed[raw] = _headers(raw)
        out.append(
            Envelope(
                row.event_id,
                row.event_type,
                row.channel,
                row.created_at,
                bytes(row.payload),
                row.event_key,
                headers,
            )
        )
    return out


def _headers(text: str | None) -> dict[str, str]:
    value = orjson.loads(text) if text else None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def outbox_table(metadata: MetaData, name: str = "edgeway_outbox") -> Table:
    """The outbox table in the service's own metadata (so its migrations create it)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return Table(
        name,
        metadata,
        # INTEGER PRIMARY KEY on SQLite is the rowid: monotonic, so id order is commit order
        # within one writer.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(32), nullable=False, unique=True),
        Column("channel", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("event_key", String(256), nullable=True),
        Column("headers", JSON, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("sent_at", Float, nullable=True),
        Index(f"ix_{name}_pending", "sent_at", "id"),
    )


class Outbox:
    """Writes events into the outbox table inside the caller's transaction."""

    def __init__(self, metadata: MetaData, *, table_name: str = "edgeway_outbox") -> None:
        self.table = outbox_table(metadata, table_name)
        self._insert = BulkInsert(self.table, _COLUMNS)

    async def add(
        self,
        session: AsyncSession | AsyncConnection,
        event: Event,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Queue ``event`` in ``session``'s transaction (an ORM session or a Core connection);
        it is published after the commit."""
        return (await self.add_many(session, [event], headers=headers))[0]

    async def add_many(
        self,
        session: AsyncSession | AsyncConnection,
        events: Sequence[Event],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> list[Envelope]:
        """Queue several events of one operation: they share its request id and trace context."""
        shared = tracing.outgoing_headers(headers)
        envelopes = [envelope_for(e, shared) for e in events]
        text = orjson.dumps(shared).decode()  # one JSON text for all: they share the headers
        await self._insert.execute(
            session, [(e.id, e.channel, e.type, e.key, text, e.payload, e.time) for e in envelopes]
        )
        return envelopes

    async def pending(self, session: AsyncSession) -> int:
        """Rows not yet published (the backlog metric)."""
        stmt = select(func.count()).select_from(self.table).where(self.table.c.sent_at.is_(None))
        return int((await session.execute(stmt)).scalar_one())


class OutboxRelay:
    """Publishes the outbox: ``await relay.relay_once()`` for one batch, or ``start()`` a loop.

    ``batch_size`` rows go out per transaction, pipelined; ``idle_interval`` is how long the
    loop sleeps when the outbox is empty (``wake()`` cuts it short after a commit);
    ``keep_sent`` is how many seconds sent rows stay for inspection before they are deleted
    (``None`` keeps them). Every ``backlog_interval`` seconds the loop counts the pending rows:
    :meth:`backlog` returns that count (for a scrape-time gauge), and with bus metrics it is the
    ``edgeway_bus_outbox_backlog`` gauge.
    """

    def __init__(
        self,
        outbox: Outbox,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        batch_size: int = 1000,
        idle_interval: float = 0.2,
        retry_interval: float = 1.0,
        keep_sent: float | None = 3600.0,
        backlog_interval: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.sessions = sessions
        self.bus = bus
        self.batch_size = batch_size
        self.idle_interval = idle_interval
        self.retry_interval = retry_interval
        self.keep_sent = keep_sent
        self.backlog_interval = backlog_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_count = 0.0
        self._backlog = 0
        self._backlog_gauge = bus.metrics.backlog_of(outbox.table.name) if bus.metrics is not None else None
        table = outbox.table
        self._mark = InList(
            lambda ids: update(table).where(table.c.id.in_(ids)).values(sent_at=bindparam("now"))
        )
        self.published = 0

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.sessions() as session:
            locking = session.get_bind().dialect.name == "postgresql"
            if locking:
                # PostgreSQL: hold the batch's row locks while publishing, so a second relay
                # skips these rows instead of publishing them too.
                async with session.begin():
                    rows = await self._pending_rows(session, lock=True)
                    if rows:
                        await self.bus.publish_envelopes(_envelopes(rows))
                        await self._mark_sent(session, rows)
            else:
                # SQLite: never hold a transaction across network I/O. A read snapshot held while
                # the service commits new events cannot be upgraded to a write (SQLITE_BUSY in WAL
                # mode), so read, publish, then mark in a second transaction; a crash in between
                # re-publishes with the same ids, which the broker/inbox de-duplicate.
                async with session.begin():
                    rows = await self._pending_rows(session, lock=False)
                if rows:
                    await self.bus.publish_envelopes(_envelopes(rows))
                    async with session.begin():
                        await self._mark_sent(session, rows)
        self.published += len(rows)
        return len(rows)

    async def _pending_rows(self, session: AsyncSession, *, lock: bool) -> Sequence[Any]:
        table = self.outbox.table
        stmt = (
            select(
                table.c.id,
                table.c.event_id,
                table.c.channel,
                table.c.event_type,
                table.c.event_key,
                type_coerce(table.c.headers, Text).label("headers"),
                table.c.payload,
                table.c.created_at,
            )
            .where(table.c.sent_at.is_(None))
            .order_by(table.c.id)
            .limit(self.batch_size)
        )
        if lock:
            stmt = stmt.with_for_update(skip_locked=True)
        return (await session.execute(stmt)).all()

    async def _mark_sent(self, session: AsyncSession, rows: Sequence[Any]) -> None:
        await self._mark.execute(session, [row.id for row in rows], now=time.time())

    async def purge(self) -> int:
        if self.keep_sent is None:
            return 0
        table = self.outbox.table
        cutoff = time.time() - self.keep_sent
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                delete(table).where(table.c.sent_at.is_not(None), table.c.sent_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def backlog(self) -> float:
        """Pending rows at the last count (the loop counts every ``backlog_interval`` seconds)."""
        return float(self._backlog)

    async def count_backlog(self) -> int:
        """Count the pending rows now (and update :meth:`backlog` and the gauge)."""
        async with self.sessions() as session:
            self._backlog = await self.outbox.pending(session)
        self._last_count = time.monotonic()
        if self._backlog_gauge is not None:
            self._backlog_gauge.set(self._backlog)
        return self._backlog

    def wake(self) -> None:
        """Tell the loop there is something to publish (call after committing an ``add``)."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; survives broker and database outages by retrying."""
        while True:
            try:
                count = await self.relay_once()
                now = time.monotonic()
                if now - self._last_count >= self.backlog_interval:
                    await self.count_backlog()
                if now - self._last_purge > 60:
                    self._last_purge = now
                    await self.purge()
            except (BusError, OSError, ConnectionError) as exc:
                log.warning("outbox relay: publish failed, retrying in %.1f s: %s", self.retry_interval, exc)
                await asyncio.sleep(self.retry_interval)
                continue
            except Exception as exc:  # a database error: keep the service up, keep trying
                log.exception(
                    "outbox relay: unexpected error, retrying in %.1f s: %s", self.retry_interval, exc
                )
                await asyncio.sleep(self.retry_interval)
                continue
            if count < self.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="edgeway-outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
