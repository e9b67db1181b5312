"""The outbox keeps the writer's trace context in columns, and tables an older edgeway made get
those columns added at start (``create_all`` never changes an existing table), on SQLite and
PostgreSQL; rows written before the upgrade still go out with their context."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from conftest import require
from edgeway.bus.bus import EventBus, Received
from edgeway.bus.events import Event
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.outbox import Outbox, OutboxRelay
from edgeway.bus.transport import ChannelConfig
from edgeway.bus.upgrade import MissingColumnError, add_missing_columns
from edgeway.observability.logs import request_context
from edgeway.saga.store import SagaStore
from edgeway.service.database import Database

from .helpers import eventually, order_events

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OLD_PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def old_outbox(metadata: MetaData, name: str) -> Table:
    """The outbox table as edgeway made it before the trace columns."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(32), nullable=False, unique=True),
        Column("channel", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("event_key", String(256), nullable=True),
        Column("headers", JSON, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("sent_at", Float, nullable=True),
    )


async def _columns(engine: AsyncEngine, table: str, schema: str | None = None) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_columns(table, schema=schema))
    return {c["name"] for c in found}


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "postgres":
        require("postgres")
        made = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    else:
        made = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    yield made
    await made.dispose()


async def test_an_old_outbox_gets_the_trace_columns_and_its_old_rows_still_carry_their_context(
    engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    old = old_outbox(MetaData(), name)
    async with engine.begin() as conn:
        await conn.run_sync(old.create)
        # a row written by the old code: its context inside the JSON headers
        await conn.execute(
            old.insert().values(
                event_id="01OLDROW0000000000000000AA",
                channel=placed.channel,
                event_type=placed.event_type,
                event_key="o-old",
                headers={"x-request-id": "old-req", "traceparent": OLD_PARENT},
                payload=orjson.dumps({"order_id": "o-old"}),
                created_at=time.time(),
            )
        )
    metadata = MetaData()
    outbox = Outbox(metadata, table_name=name)
    try:
        async with engine.begin() as conn:
            added = await add_missing_columns(conn, [outbox.table])
        assert sorted(added) == [f"{name}.request_id", f"{name}.traceparent", f"{name}.tracestate"]
        assert {"request_id", "traceparent", "tracestate"} <= await _columns(engine, name)
        async with engine.begin() as conn:
            assert await add_missing_columns(conn, [outbox.table]) == []  # idempotent

        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            with request_context("new-req", TRACE_ID, "b7ad6b7169203331"):
                await outbox.add(session, placed(order_id="o-new"), headers={"tracestate": "acme=1"})
        async with sessions() as session:
            new_row = (
                await session.execute(select(outbox.table).where(outbox.table.c.event_key == "o-new"))
            ).one()
        assert (new_row.request_id, new_row.traceparent, new_row.tracestate) == (
            "new-req",
            f"00-{TRACE_ID}-b7ad6b7169203331-01",
            "acme=1",
        )
        assert new_row.headers == {}

        got: dict[str, Received] = {}
        bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)])

        async def handle(event: Event, ctx: Received) -> None:
            got[event.order_id] = ctx  # type: ignore[attr-defined]

        bus.add_handler(placed, handle, group="g")
        async with bus:
            assert await OutboxRelay(outbox, sessions, bus).relay_once() == 2
            await eventually(lambda: len(got) == 2, what="both rows")
        assert (got["o-old"].request_id, got["o-old"].traceparent) == ("old-req", OLD_PARENT)
        assert (got["o-new"].request_id, got["o-new"].tracestate) == ("new-req", "acme=1")
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: metadata.drop_all(sync))


async def test_a_missing_not_null_column_is_named_instead_of_added(engine: AsyncEngine) -> None:
    name = f"things_{uuid.uuid4().hex[:10]}"
    async with engine.begin() as conn:
        await conn.run_sync(Table(name, MetaData(), Column("id", Integer, primary_key=True)).create)
    wanted = Table(
        name, MetaData(), Column("id", Integer, primary_key=True), Column("must", String(8), nullable=False)
    )
    try:
        with pytest.raises(MissingColumnError, match=f"table '{name}' has no column 'must'.*migration"):
            async with engine.begin() as conn:
                await add_missing_columns(conn, [wanted])
        assert await _columns(engine, name) == {"id"}
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {name}"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_kits_database_and_the_saga_store_upgrade_their_tables_at_start(
    kind: str, tmp_path: Path
) -> None:
    """What a service sees after upgrading edgeway: its database, made by the old version, is
    brought up to date by Database.create (the outbox) and SagaStore.create_tables (tracestate)."""
    schema: str | None = None
    if kind == "postgres":
        require("postgres")
        url = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        schema = f"up_{uuid.uuid4().hex[:10]}"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/service.db"
    metadata = MetaData()
    database = Database(url, metadata, schema=schema)
    old_metadata = MetaData()
    old_outbox(old_metadata, "edgeway_outbox")
    sagas = f'"{schema}".edgeway_saga' if schema else "edgeway_saga"
    try:
        async with database.engine.begin() as conn:
            if schema is not None:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            await conn.run_sync(old_metadata.create_all)
        # the saga tables as they were before tracestate
        await SagaStore(database.engine).create_tables()
        async with database.engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE {sagas} DROP COLUMN tracestate"))
        assert "request_id" not in await _columns(database.engine, "edgeway_outbox", schema)
        assert "tracestate" not in await _columns(database.engine, "edgeway_saga", schema)

        Outbox(metadata)  # the service's outbox, as the kit defines it
        await database.create()
        assert {"request_id", "traceparent", "tracestate"} <= await _columns(
            database.engine, "edgeway_outbox", schema
        )
        await SagaStore(database.engine).create_tables()
        assert "tracestate" in await _columns(database.engine, "edgeway_saga", schema)
    finally:
        if schema is not None:
            async with database.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await database.dispose()
