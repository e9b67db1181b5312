"""Saga persistence: inserts, version-fenced writes, claims and leases, acknowledgements, queries.

Every state change is one ``UPDATE … WHERE id = ? AND version = ? AND owner = ?`` on the saga
row that bumps ``version`` (optimistic locking), plus the step rows it touches, in one
transaction. An instance whose lease expired and whose saga another instance claimed finds no
row to update and gets :class:`~edgeway.saga.errors.SagaLeaseLostError` instead of overwriting
the newer state.

Claims are atomic on both databases. PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED LIMIT n``
then ``UPDATE … WHERE id IN (those)`` in one transaction, so concurrent claimers skip each other's
rows instead of queueing. SQLite serialises writers, so there one ``UPDATE … WHERE id IN (SELECT …
LIMIT n) RETURNING id`` is enough. The claim conditions are repeated in the ``UPDATE`` so a row
someone else claimed in between is never taken.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import ColumnElement, FromClause, MetaData, and_, delete, insert, inspect, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edgeway.bus.upgrade import add_missing_columns
from edgeway.saga.errors import SagaLeaseLostError, SagaNotFoundError, SagaStateError
from edgeway.saga.state import SagaState, SagaSummary
from edgeway.saga.status import ACTIVE_STATUSES, SagaStatus, StepStatus
from edgeway.saga.tables import SagaTables, saga_tables

# Saga columns the in-memory record mirrors; the claim columns live only in the row.
_MIRRORED = frozenset({"status", "data", "current_step", "error"})


@dataclass(slots=True)
class StepRecord:
    name: str
    position: int
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    failures: int = 0
    compensation_attempts: int = 0
    compensation_failures: int = 0
    interruptions: int = 0
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    compensated_at: float | None = None

    def row(self, saga_id: str) -> dict[str, Any]:
        return {
            "saga_id": saga_id,
            "name": self.name,
            "position": self.position,
            "status": self.status.value,
            "attempts": self.attempts,
            "failures": self.failures,
            "compensation_attempts": self.compensation_attempts,
            "compensation_failures": self.compensation_failures,
            "interruptions": self.interruptions,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "compensated_at": self.compensated_at,
        }


@dataclass(slots=True)
class SagaRecord:
    """A saga as the orchestrator holds it while driving it; mirrors the rows after each write."""

    id: str
    name: str
    status: SagaStatus
    data: dict[str, Any]
    current_step: int
    version: int
    created_at: float
    error: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    steps: dict[str, StepRecord] = field(default_factory=dict)

    def apply(self, saga: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]]) -> None:
        """Mirror a committed write (the version was bumped by one)."""
        self.version += 1
        for key, value in saga.items():
            if key in _MIRRORED:
                setattr(self, key, SagaStatus(value) if key == "status" else value)
        for name, values in steps.items():
            record = self.steps[name]
            for key, value in values.items():
                setattr(record, key, StepStatus(value) if key == "status" else value)


_STEP_FIELDS = tuple(f.name for f in fields(StepRecord))


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, SagaStatus | StepStatus) else v for k, v in values.items()}


class SagaStore:
    """All SQL the saga package runs, on the service's engine. See the module docstring."""

    def __init__(
        self, engine: AsyncEngine, *, metadata: MetaData | None = None, prefix: str = "edgeway_saga"
    ) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.metadata = metadata if metadata is not None else MetaData()
        self.tables: SagaTables = saga_tables(self.metadata, prefix)
        self.locking = engine.dialect.name == "postgresql"

    # -- schema ----------------------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create the tables unless they exist (services with migrations create them there)."""
        tables = list(self.tables.all)
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(lambda sync: self.metadata.create_all(sync, tables=tables))
                # Tables an older edgeway made lack the newer columns (tracestate).
                await add_missing_columns(conn, tables)
        except DBAPIError:
            # Two replicas starting at once race on CREATE TABLE; the loser finds them made.
            if not await self.tables_exist():
                raise

    async def tables_exist(self) -> bool:
        names = [t.name for t in self.tables.all]
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda sync: all(inspect(sync).has_table(n) for n in names))

    async def drop_tables(self) -> None:
        tables = list(self.tables.all)
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda sync: self.metadata.drop_all(sync, tables=tables))

    # -- instances -------------------------------------------------------------------------------

    async def insert(
        self, session: AsyncSession, record: SagaRecord, *, owner: str | None, lease: float
    ) -> None:
        now = time.time()
        await session.execute(
            insert(self.tables.sagas),
            [
                {
                    "id": record.id,
                    "name": record.name,
                    "status": record.status.value,
                    "data": record.data,
                    "current_step": record.current_step,
                    "error": None,
                    "request_id": record.request_id,
                    "traceparent": record.traceparent,
                    "tracestate": record.tracestate,
                    "created_at": record.created_at,
                    "updated_at": now,
                    "finished_at": None,
                    "version": record.version,
                    "owner": owner,
                    "lease_until": now + lease if owner is not None else None,
                }
            ],
        )
        if record.steps:
            await session.execute(
                insert(self.tables.steps), [s.row(record.id) for s in record.steps.values()]
            )

    async def add_steps(self, record: SagaRecord, steps: Sequence[StepRecord]) -> None:
        """Rows for steps added to a definition after the saga started."""
        async with self.sessions() as session, session.begin():
            await session.execute(insert(self.tables.steps), [s.row(record.id) for s in steps])
        for step in steps:
            record.steps[step.name] = step

    async def exists(self, session: AsyncSession, saga_id: str) -> str | None:
        """The saga's name if a saga with this id exists."""
        sagas = self.tables.sagas
        found = await session.execute(select(sagas.c.name).where(sagas.c.id == saga_id))
        return found.scalar_one_or_none()

    async def _read(self, saga_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The saga row and its step rows (in step order), as mappings."""
        sagas, steps = self.tables.sagas, self.tables.steps
        async with self.sessions() as session:
            row = (await session.execute(select(sagas).where(sagas.c.id == saga_id))).one_or_none()
            if row is None:
                raise SagaNotFoundError(saga_id)
            step_rows = await session.execute(
                select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.position)
            )
            return dict(row._mapping), [dict(s._mapping) for s in step_rows.all()]

    async def load(self, saga_id: str) -> SagaRecord:
        row, step_rows = await self._read(saga_id)
        record = SagaRecord(
            id=row["id"],
            name=row["name"],
            status=SagaStatus(row["status"]),
            data=dict(row["data"]),
            current_step=row["current_step"],
            version=row["version"],
            created_at=row["created_at"],
            error=row["error"],
            request_id=row["request_id"],
            traceparent=row["traceparent"],
            tracestate=row["tracestate"],
        )
        for s in step_rows:
            values = {name: s[name] for name in _STEP_FIELDS}
            values["status"] = StepStatus(values["status"])
            record.steps[s["name"]] = StepRecord(**values)
        return record

    # -- fenced writes ---------------------------------------------------------------------------

    async def fence(
        self, session: AsyncSession, record: SagaRecord, owner: str, saga: Mapping[str, Any] | None = None
    ) -> None:
        """Bump the version if we still own the saga at the version we know; else lease lost.

        On PostgreSQL this also takes the row lock until the transaction ends.
        """
        sagas = self.tables.sagas
        stmt = (
            update(sagas)
            .where(sagas.c.id == record.id, sagas.c.version == record.version, sagas.c.owner == owner)
            .values(**_plain(saga or {}), version=record.version + 1, updated_at=time.time())
        )
        result = await session.execute(stmt)
        if getattr(result, "rowcount", 0) != 1:
            raise SagaLeaseLostError(record.id)

    async def write(
        self,
        session: AsyncSession,
        record: SagaRecord,
        saga: Mapping[str, Any] | None = None,
        steps: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Unfenced writes, for a transaction that already called :meth:`fence`."""
        if saga:
            sagas = self.tables.sagas
            await session.execute(update(sagas).where(sagas.c.id == record.id).values(**_plain(saga)))
        table = self.tables.steps
        for name, values in (steps or {}).items():
            await session.execute(
                update(table)
                .where(table.c.saga_id == record.id, table.c.name == name)
                .values(**_plain(values))
            )

    async def save(
        self,
        record: SagaRecord,
        owner: str,
        saga: Mapping[str, Any] | None = None,
        steps: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """One fenced transaction; mirrors the change into ``record`` after the commit."""
        saga = saga or {}
        steps = steps or {}
        async with self.sessions() as session, session.begin():
            await self.fence(session, record, owner, saga)
            await self.write(session, record, None, steps)
        record.apply(saga, steps)

    # -- claims and leases -----------------------------------------------------------------------

    @staticmethod
    def _claimable(now: float, sagas: FromClause) -> ColumnElement[bool]:
        # Not "or owner = me": a saga this instance holds is being driven here (or was just
        # started by ``run``); claiming it again would start a second execution of it.
        return and_(
            sagas.c.status.in_(ACTIVE_STATUSES),
            or_(sagas.c.owner.is_(None), sagas.c.lease_until < now),
        )

    async def claim(
        self, names: Iterable[str], owner: str, lease: float, limit: int, *, exclude: Iterable[str] = ()
    ) -> list[str]:
        """Take up to ``limit`` unfinished sagas that nobody holds (or whose lease expired)."""
        sagas = self.tables.sagas
        now = time.time()
        names = list(names)
        excluded = list(exclude)
        if limit <= 0 or not names:
            return []
        candidates = select(sagas.c.id).where(self._claimable(now, sagas), sagas.c.name.in_(names))
        if excluded:
            candidates = candidates.where(sagas.c.id.not_in(excluded))
        candidates = candidates.order_by(sagas.c.created_at).limit(limit)
        async with self.sessions() as session, session.begin():
            if self.locking:
                # Pick and lock first, then update exactly those: inside an UPDATE, PostgreSQL
                # may re-run a LIMIT … SKIP LOCKED subquery and take far more rows than the limit.
                locked = candidates.with_for_update(skip_locked=True)
                ids = list((await session.execute(locked)).scalars())
                if not ids:
                    return []
                chosen = sagas.c.id.in_(ids)
            else:
                chosen = sagas.c.id.in_(candidates.scalar_subquery())
            stmt = (
                update(sagas)
                .where(chosen, self._claimable(now, sagas))
                .values(owner=owner, lease_until=now + lease, version=sagas.c.version + 1, updated_at=now)
                .returning(sagas.c.id)
            )
            return list((await session.execute(stmt)).scalars())

    async def renew(self, owner: str, saga_ids: Iterable[str], lease: float) -> set[str]:
        """Extend our leases; returns the ids we lost: still unfinished, but no longer ours.

        A saga that finished meanwhile is not lost (its final write cleared the owner).
        """
        ids = list(saga_ids)
        if not ids:
            return set()
        sagas = self.tables.sagas
        stmt = (
            update(sagas)
            .where(sagas.c.id.in_(ids), sagas.c.owner == owner, sagas.c.status.in_(ACTIVE_STATUSES))
            .values(lease_until=time.time() + lease)
            .returning(sagas.c.id)
        )
        async with self.sessions() as session, session.begin():
            kept = set((await session.execute(stmt)).scalars())
            rest = [i for i in ids if i not in kept]
            if not rest:
                return set()
            unfinished = select(sagas.c.id).where(sagas.c.id.in_(rest), sagas.c.status.in_(ACTIVE_STATUSES))
            return set((await session.execute(unfinished)).scalars())

    async def release(self, owner: str, saga_ids: Iterable[str]) -> None:
        """Give sagas back so another instance can take them at once (graceful stop)."""
        ids = list(saga_ids)
        if not ids:
            return
        sagas = self.tables.sagas
        stmt = (
            update(sagas)
            .where(sagas.c.id.in_(ids), sagas.c.owner == owner)
            .values(owner=None, lease_until=None, version=sagas.c.version + 1, updated_at=time.time())
        )
        async with self.sessions() as session, session.begin():
            await session.execute(stmt)

    # -- acknowledgements ------------------------------------------------------------------------

    async def record_ack(self, saga_id: str, step: str, service: str, message_id: str | None) -> bool:
        """Store one acknowledgement; ``False`` when it was already stored (a duplicate)."""
        acks = self.tables.acks
        row = {
            "saga_id": saga_id,
            "step": step,
            "service": service,
            "acked_at": time.time(),
            "message_id": message_id,
        }
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(insert(acks), [row])
        except IntegrityError:
            return False
        return True

    async def acks(self, saga_id: str, step: str) -> dict[str, float]:
        acks = self.tables.acks
        stmt = select(acks.c.service, acks.c.acked_at).where(acks.c.saga_id == saga_id, acks.c.step == step)
        async with self.sessions() as session:
            return {row.service: row.acked_at for row in (await session.execute(stmt)).all()}

    # -- queries and operator actions ------------------------------------------------------------

    async def state(self, saga_id: str) -> SagaState:
        row, step_rows = await self._read(saga_id)
        # pydantic turns the UNIX-seconds floats into UTC datetimes and the strings into enums.
        return SagaState.model_validate({**row, "steps": step_rows})

    async def list(
        self,
        *,
        statuses: Iterable[SagaStatus] | None = None,
        name: str | None = None,
        stuck_after: float | None = None,
        limit: int = 100,
    ) -> builtins.list[SagaSummary]:
        """Sagas, newest first. ``stuck_after``: only unfinished ones not updated for that many seconds."""
        sagas = self.tables.sagas
        stmt = select(sagas).order_by(sagas.c.created_at.desc(), sagas.c.id.desc()).limit(limit)
        if statuses is not None:
            stmt = stmt.where(sagas.c.status.in_([s.value for s in statuses]))
        if name is not None:
            stmt = stmt.where(sagas.c.name == name)
        if stuck_after is not None:
            stmt = stmt.where(
                sagas.c.status.in_(ACTIVE_STATUSES), sagas.c.updated_at < time.time() - stuck_after
            )
        async with self.sessions() as session:
            return [_summary(row) for row in (await session.execute(stmt)).all()]

    async def needs_attention(
        self, *, stuck_after: float = 300.0, limit: int = 100
    ) -> builtins.list[SagaSummary]:
        """Failed sagas and unfinished ones that made no progress for ``stuck_after`` seconds."""
        sagas = self.tables.sagas
        cutoff = time.time() - stuck_after
        stmt = (
            select(sagas)
            .where(
                or_(
                    sagas.c.status == SagaStatus.FAILED.value,
                    and_(sagas.c.status.in_(ACTIVE_STATUSES), sagas.c.updated_at < cutoff),
                )
            )
            .order_by(sagas.c.updated_at)
            .limit(limit)
        )
        async with self.sessions() as session:
            return [_summary(row) for row in (await session.execute(stmt)).all()]

    async def retry(self, saga_id: str) -> None:
        """Put a ``failed`` saga back to ``compensating`` with a fresh compensation budget."""
        sagas, steps = self.tables.sagas, self.tables.steps
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(sagas)
                .where(sagas.c.id == saga_id, sagas.c.status == SagaStatus.FAILED.value)
                .values(
                    status=SagaStatus.COMPENSATING.value,
                    owner=None,
                    lease_until=None,
                    finished_at=None,
                    version=sagas.c.version + 1,
                    updated_at=time.time(),
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                status = await session.execute(select(sagas.c.status).where(sagas.c.id == saga_id))
                found = status.scalar_one_or_none()
                if found is None:
                    raise SagaNotFoundError(saga_id)
                raise SagaStateError(
                    f"saga {saga_id} is {found}, not failed: only a failed saga can be retried"
                )
            await session.execute(
                update(steps)
                .where(steps.c.saga_id == saga_id, steps.c.status == StepStatus.COMPENSATION_FAILED.value)
                .values(compensation_failures=0, interruptions=0)
            )

    async def purge(self, older_than: float) -> int:
        """Delete completed and compensated sagas finished more than ``older_than`` seconds ago."""
        sagas, steps, acks = self.tables.all
        cutoff = time.time() - older_than
        done = select(sagas.c.id).where(
            sagas.c.status.in_([SagaStatus.COMPLETED.value, SagaStatus.COMPENSATED.value]),
            sagas.c.finished_at < cutoff,
        )
        async with self.sessions() as session, session.begin():
            ids = list((await session.execute(done)).scalars())
            if not ids:
                return 0
            for chunk in _chunks(ids, 500):
                await session.execute(delete(acks).where(acks.c.saga_id.in_(chunk)))
                await session.execute(delete(steps).where(steps.c.saga_id.in_(chunk)))
                await session.execute(delete(sagas).where(sagas.c.id.in_(chunk)))
        return len(ids)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _summary(row: Any) -> SagaSummary:
    return SagaSummary.model_validate(row._mapping)
