"""Local read copies: a slim copy of another service's entity, kept from its change events.

Instead of calling the users service on every request, the orders service keeps
``users_copy(id, name, email)`` up to date from ``UserChanged`` / ``UserDeleted`` events, and can
rebuild it from the channel's history (from the beginning) when the table is new, was lost, or
its shape changed.

    users = ReadCopy(sessions, users_copy, key="id", version="version")

    @users.upsert(UserChanged)
    def _(event: UserChanged) -> dict[str, object]:
        return {"id": event.user_id, "name": event.name, "version": event.version}

    @users.delete(UserDeleted)
    def _(event: UserDeleted) -> object:
        return event.user_id

    users.attach(bus, group="orders-users-copy")
    ...
    await users.rebuild(bus)

Applying is idempotent (an upsert of the same state twice is one state), so no inbox is needed.
With a ``version`` column an older change never overwrites a newer one, which makes redeliveries
and retries out of order harmless, and lets a rebuild run while live events keep arriving.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edgeway.bus.bus import EventBus, Finish, Job, run_jobs
from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import Event, decode

E = TypeVar("E", bound=Event)
Row = dict[str, Any]


class ReadCopy:
    """A local table mirrored from change events. See the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        *,
        key: str,
        version: str | None = None,
    ) -> None:
        if key not in table.c:
            raise BusConfigError(f"read copy {table.name}: no key column {key!r}")
        if version is not None and version not in table.c:
            raise BusConfigError(f"read copy {table.name}: no version column {version!r}")
        self.sessions = sessions
        self.table = table
        self.key = key
        self.version = version
        self._upserts: dict[str, tuple[type[Event], Callable[[Any], Row | None]]] = {}
        self._deletes: dict[str, tuple[type[Event], Callable[[Any], Any]]] = {}

    # -- mapping events to rows ------------------------------------------------------------------

    def upsert(
        self, event_class: type[E]
    ) -> Callable[[Callable[[E], Row | None]], Callable[[E], Row | None]]:
        """Decorator: ``fn(event) -> row`` (``None`` skips the event)."""

        def register(fn: Callable[[E], Row | None]) -> Callable[[E], Row | None]:
            self._upserts[event_class.event_type] = (event_class, fn)
            return fn

        return register

    def delete(self, event_class: type[E]) -> Callable[[Callable[[E], Any]], Callable[[E], Any]]:
        """Decorator: ``fn(event) -> key`` of the row to remove."""

        def register(fn: Callable[[E], Any]) -> Callable[[E], Any]:
            self._deletes[event_class.event_type] = (event_class, fn)
            return fn

        return register

    def event_classes(self) -> list[type[Event]]:
        return [c for c, _ in self._upserts.values()] + [c for c, _ in self._deletes.values()]

    # -- live updates ----------------------------------------------------------------------------

    def attach(self, bus: EventBus, *, group: str) -> None:
        """Subscribe the copy's event types on ``bus`` under ``group`` (one group per copy)."""
        if not self._upserts and not self._deletes:
            raise BusConfigError(f"read copy {self.table.name} maps no events; add @upsert/@delete first")
        for event_class in self.event_classes():
            bus.add_handler(event_class, self._apply_event, group=group, inbox=self)

    async def _apply_event(self, event: Event, session: AsyncSession) -> None:
        await self.apply(session, event)

    async def run(self, group: str, jobs: Sequence[Job], finish: Finish) -> list[BaseException | None]:
        """The bus runner: a batch of events in one transaction, one by one if that fails."""
        try:
            async with self.sessions() as session, session.begin():
                await run_jobs(jobs, finish, session)
            return [None] * len(jobs)
        except Exception:
            pass
        results: list[BaseException | None] = []
        for job in jobs:
            try:
                async with self.sessions() as session, session.begin():
                    await run_jobs([job], finish, session)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def apply(self, session: AsyncSession, event: Event) -> None:
        """Apply one change event to the table in ``session``."""
        upsert = self._upserts.get(event.event_type)
        if upsert is not None:
            row = upsert[1](event)
            if row is not None:
                await self._upsert(session, row)
            return
        remove = self._deletes.get(event.event_type)
        if remove is not None:
            await session.execute(delete(self.table).where(self.table.c[self.key] == remove[1](event)))

    async def _upsert(self, session: AsyncSession, row: Row) -> None:
        dialect = session.get_bind().dialect.name
        table = self.table
        if dialect not in ("postgresql", "sqlite"):
            raise BusConfigError(f"read copies support PostgreSQL and SQLite, not {dialect}")
        # The dialect the engine already loaded; importing both at start-up cost a PostgreSQL
        # service SQLite's dialect (and a SQLite one PostgreSQL's, ~20 ms).
        module: Any = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
        stmt = module.insert(table).values(**row)
        changes = {name: stmt.excluded[name] for name in row if name != self.key}
        where = None
        if self.version is not None:
            where = table.c[self.version] < stmt.excluded[self.version]
        if changes:
            stmt = stmt.on_conflict_do_update(index_elements=[table.c[self.key]], set_=changes, where=where)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=[table.c[self.key]])
        await session.execute(stmt)

    # -- rebuild ---------------------------------------------------------------------------------

    async def rebuild(self, bus: EventBus, *, batch_size: int = 500) -> int:
        """Empty the table and replay every retained event of the copy's channels, in order.

        Returns how many events were applied. Needs history on the broker (NATS: a stream
        without ``max_age`` or with enough of it; RabbitMQ: the transport's history stream).
        """
        by_type = {c.event_type: c for c in self.event_classes()}
        applied = 0
        await bus.transport.connect()
        async with self.sessions() as session, session.begin():
            await session.execute(delete(self.table))
            for name in sorted({c.channel for c in by_type.values()}):
                channel = bus.channel(name)
                await bus.transport.declare(channel)
                async for envelope in bus.transport.history(channel):
                    event_class = by_type.get(envelope.type)
                    if event_class is None:
                        continue
                    await self.apply(session, decode(event_class, envelope))
                    applied += 1
                    if applied % batch_size == 0:
                        await session.flush()
        return applied
