"""Transactional outbox: events written in the same transaction as the state they report.

``await outbox.add(session, event)`` inserts a row in the caller's transaction, so the event
exists if and only if the business change committed. :class:`OutboxRelay` publishes pending rows
in id order, in batches with a window of outstanding broker confirmations, and marks them sent.

Failure semantics: a row is marked sent only after the broker confirmed it. If the relay dies
between the confirmation and the mark, the next relay publishes the row again with the same
message id (the row's event id, fixed at ``add``): NATS drops it inside its duplicate window,
and consumers with an inbox drop it on any broker. Nothing is lost; nothing is applied twice.

The payload is stored as the bytes the event's encoding made (JSON, msgpack or protobuf: see
:mod:`edgeway.bus.codecs`) in a binary column, a BLOB on SQLite and ``bytea`` on PostgreSQL, and
a payload that is not JSON names its content type in the row's headers; the relay publishes both
as they were written.

Each row keeps the trace context of the operation that wrote it, in columns of its own:
``request_id``, ``traceparent`` (the span that made the event: the outbox's PRODUCER span with a
tracer, else the request's or the saga step's) and ``tracestate``; the relay puts them back on the
message headers (:mod:`edgeway.bus.tracing`), so a consumer continues the trace of the HTTP request
that committed the change, however much later the event goes out. ``SELECT * FROM edgeway_outbox
WHERE request_id = …`` finds what a request wrote. A table made by an older edgeway lacks these
columns: :func:`edgeway.bus.upgrade.add_missing_columns` adds them (the service kit's
``Database.create`` does it at start).

On PostgreSQL the relay locks its batch with ``FOR UPDATE SKIP LOCKED`` while publishing, so several
relays (one per service replica) share the work without publishing a row twice. SQLite has one
writer at a time and no row locks: run one relay per database (the normal case for a file per
service); there the relay reads, publishes and marks in separate steps so it never holds a
transaction across network I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from edgeway.bus import tracing
from edgeway.bus.bulk import BulkInsert, Prepared
from edgeway.bus.bus import EventBus
from edgeway.bus.errors import BusError
from edgeway.bus.events import H_REQUEST_ID, H_TRACEPARENT, H_TRACESTATE, Envelope, Event, envelopes_for
from edgeway.observability.context import MAX_TRACESTATE
from edgeway.observability.logs import FailureLog
from edgeway.tasks import cancel_and_wait, woken

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("edgeway.bus.outbox")

_COLUMNS = (
    "event_id",
    "channel",
    "event_type",
    "event_key",
    "headers",
    "payload",
    "created_at",
    "request_id",
    "traceparent",
    "tracestate",
)
_PENDING_COLUMNS = ("id", *_COLUMNS)
_PURGE_CHUNK = 1000  # rows per purge transaction


def _envelopes(rows: Sequence[Any]) -> list[Envelope]:
    """Envelopes of pending rows (``_PENDING_COLUMNS`` tuples, as the driver returns them).

    Headers are the JSON text plus the trace columns, built once per distinct combination: the
    events of one add_many share theirs (~1.5 µs per row saved against the JSON type's
    json.loads each). asyncpg decodes JSON columns itself and hands over dicts. A row written
    before the trace columns existed has its context in the JSON text, and NULL columns.
    """
    built: dict[tuple[Any, ...], dict[str, str]] = {}
    out = []
    for _id, event_id, channel, event_type, key, raw, payload, created_at, rid, parent, state in rows:
        cache_key = (raw if not isinstance(raw, dict) else id(raw), rid, parent, state)
        headers = built.get(cache_key)
        if headers is None:
            headers = dict(raw) if isinstance(raw, dict) else _headers(raw)
            if rid is not None:
                headers[H_REQUEST_ID] = rid
            if parent is not None:
                headers[H_TRACEPARENT] = parent
            if state is not None:
                headers[H_TRACESTATE] = state
            built[cache_key] = headers
        if not isinstance(payload, bytes):
            payload = bytes(payload)  # a memoryview from some drivers
        out.append(Envelope(event_id, event_type, channel, created_at, payload, key, headers))
    return out


def _runs(ids: Sequence[int]) -> list[dict[str, int]]:
    """Sorted ids as runs of consecutive integers: ``[1, 2, 3, 7, 8]`` → 1 to 3 and 7 to 8.

    Every integer in a run is one of ``ids``, so ``id BETWEEN first AND last`` matches exactly
    them, whatever else the table holds. A batch read in id order is one run or a few (rows
    another relay holds, on PostgreSQL): one range instead of an IN list of 2,000 parameters.
    """
    out: list[dict[str, int]] = []
    if not ids:
        return out
    first = previous = ids[0]
    for current in ids[1:]:
        if current != previous + 1:
            out.append({"first": first, "last": previous})
            first = current
        previous = current
    out.append({"first": first, "last": previous})
    return out


def _headers(text: str | None) -> dict[str, str]:
    value = orjson.loads(text) if text else None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def outbox_table(metadata: MetaData, name: str = "edgeway_outbox") -> Table:
    """The outbox table in the service's own metadata (so its migrations create it)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    table = Table(
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
        # The trace context of the operation that wrote the row (edgeway.bus.tracing); nullable,
        # so add_missing_columns can add them to a table an older edgeway made.
        Column("request_id", String(128), nullable=True),
        Column("traceparent", String(55), nullable=True),
        Column("tracestate", String(MAX_TRACESTATE), nullable=True),
    )
    # Only the backlog is indexed: the relay's "oldest unsent first" walks it in id order, and
    # marking a row sent drops it from the index instead of moving it (0.8 µs per row less on
    # SQLite than an index on (sent_at, id)); the index stays small however many sent rows
    # are kept for inspection.
    unsent = table.c.sent_at.is_(None)
    Index(f"ix_{name}_unsent", table.c.id, sqlite_where=unsent, postgresql_where=unsent)
    return table


class Outbox:
    """Writes events into the outbox table inside the caller's transaction.

    With a ``tracer`` (the service kit's), each ``add``/``add_many`` is a PRODUCER span
    ``create <channel>`` in the caller's trace, and the events name it as their parent.
    """

    def __init__(
        self, metadata: MetaData, *, table_name: str = "edgeway_outbox", tracer: Tracer | None = None
    ) -> None:
        self.table = outbox_table(metadata, table_name)
        self.tracer = tracer
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
        if self.tracer is not None and events:
            channels = sorted({e.channel for e in events})
            tracing.produce(self.tracer, shared, "create", ",".join(channels), count=len(events))
        rid, parent, state = shared[H_REQUEST_ID], shared[H_TRACEPARENT], shared.get(H_TRACESTATE)
        envelopes = envelopes_for(events, shared)
        # One JSON text per headers mapping: the events of one encoding share theirs (a payload
        # that is not JSON names its content type there).
        texts: dict[int, str] = {}
        rows = []
        for e in envelopes:
            text = texts.get(id(e.headers))
            if text is None:
                rest = {k: v for k, v in e.headers.items() if k not in tracing.TRACE_HEADERS}
                text = texts[id(e.headers)] = orjson.dumps(rest).decode()
            rows.append((e.id, e.channel, e.type, e.key, text, e.payload, e.time, rid, parent, state))
        await self._insert.execute(session, rows)
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
        self._failures = FailureLog(log, f"outbox relay of {outbox.table.name}")
        self._last_purge = 0.0
        self._last_count = 0.0
        self._backlog = 0
        self._backlog_gauge = bus.metrics.backlog_of(outbox.table.name) if bus.metrics is not None else None
        table = outbox.table
        pending = (
            select(*(table.c[name] for name in _PENDING_COLUMNS))
            .where(table.c.sent_at.is_(None))
            .order_by(table.c.id)
            .limit(batch_size)
        )
        self._pending = Prepared(pending)
        self._pending_locked = Prepared(pending.with_for_update(skip_locked=True))
        self._oldest = Prepared(select(table.c.id, table.c.sent_at).order_by(table.c.id).limit(_PURGE_CHUNK))
        self._purge = Prepared(
            delete(table).where(
                table.c.id.between(bindparam("first"), bindparam("last")),
                table.c.sent_at < bindparam("cutoff"),
            )
        )
        self._mark = Prepared(
            update(table)
            .where(table.c.id.between(bindparam("first"), bindparam("last")))
            .values(sent_at=bindparam("now"))
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
        query = self._pending_locked if lock else self._pending
        return (await query.execute(session)).all()

    async def _mark_sent(self, session: AsyncSession, rows: Sequence[Any]) -> None:
        now = time.time()
        await self._mark.execute_many(session, [{**run, "now": now} for run in _runs([r[0] for r in rows])])

    async def purge(self) -> int:
        """Delete rows sent more than ``keep_sent`` seconds ago; returns how many.

        Rows are sent in id order, so the old sent rows are the oldest ids: the purge walks from
        the lowest id in chunks and stops at the first row that stays (unsent, or sent recently).
        No index on ``sent_at`` is needed (the one index is the backlog's, see ``outbox_table``).
        A sent row behind one that stays waits for a later purge.
        """
        if self.keep_sent is None:
            return 0
        cutoff = time.time() - self.keep_sent
        removed = 0
        while True:
            async with self.sessions() as session, session.begin():
                rows: Sequence[Any] = (await self._oldest.execute(session)).all()
                old: list[int] = []
                for row_id, sent_at in rows:
                    if sent_at is None or sent_at >= cutoff:
                        break
                    old.append(row_id)
                if old:
                    # ``sent_at < cutoff`` again: on PostgreSQL a row with an id inside the range
                    # may have committed since the read (ids are not commit-ordered there).
                    await self._purge.execute(session, first=old[0], last=old[-1], cutoff=cutoff)
            removed += len(old)
            if not old or len(old) < len(rows):
                return removed

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
                self._failures.failed(
                    "outbox relay: publish failed, retrying every %.1f s: %s", self.retry_interval, exc
                )
                await asyncio.sleep(self.retry_interval)
                continue
            except Exception as exc:  # a database error: keep the service up, keep trying
                self._failures.failed(
                    "outbox relay: unexpected error, retrying every %.1f s: %s",
                    self.retry_interval,
                    exc,
                    exc_info=exc,
                )
                await asyncio.sleep(self.retry_interval)
                continue
            self._failures.succeeded()
            if count < self.batch_size:
                self._wake.clear()
                await woken(self._wake, self.idle_interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="edgeway-outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
