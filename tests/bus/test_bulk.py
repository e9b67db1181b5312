"""Driver-level bulk inserts land in the caller's transaction, table and schema, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from conftest import require
from edgeway.bus.bulk import InLookup
from edgeway.bus.inbox import Inbox
from edgeway.bus.outbox import Outbox

from .helpers import order_events


@pytest.fixture(params=["sqlite", "postgres-schema"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        sqlite = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}")
        yield sqlite
        await sqlite.dispose()
        return
    require("postgres")
    schema = f"bulk_{uuid.uuid4().hex[:8]}"
    plain = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    async with plain.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # As the security service runs with db_schema: tables resolved through the translate map.
        yield plain.execution_options(schema_translate_map={None: schema})
    finally:
        async with plain.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await plain.dispose()


async def test_outbox_rows_written_in_bulk_read_back_through_sqlalchemy(
    engine: AsyncEngine, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    metadata = MetaData()
    outbox = Outbox(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        written = await outbox.add_many(
            session, [placed(order_id=f"o{i}") for i in range(3)], headers={"x-tenant": "acme"}
        )
    async with sessions() as session, session.begin():
        await outbox.add_many(session, [placed(order_id="rolled-back")])
        await session.rollback()  # the bulk insert was part of this transaction: gone with it
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.table).order_by(outbox.table.c.id))).all()
    assert [r.event_id for r in rows] == [e.id for e in written]
    assert [r.event_key for r in rows] == ["o0", "o1", "o2"]
    # the caller's headers in the JSON column, the trace context in columns of its own
    assert all(r.headers == {"x-tenant": "acme"} for r in rows)
    assert all(
        r.traceparent == written[0].traceparent and r.request_id == written[0].request_id for r in rows
    )
    assert bytes(rows[0].payload) == written[0].payload
    assert rows[0].created_at == pytest.approx(written[0].time)
    assert all(r.sent_at is None for r in rows)


async def test_in_lookups_of_any_length_find_exactly_the_existing_keys(engine: AsyncEngine) -> None:
    metadata = MetaData()
    inbox_table = Inbox(async_sessionmaker(engine), metadata).table
    lookup = InLookup(inbox_table, key="message_id", scope="consumer_group")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            inbox_table.insert(),
            [{"consumer_group": "g", "message_id": f"m{i}", "processed_at": 0.0} for i in range(0, 20, 2)]
            + [{"consumer_group": "other", "message_id": "m1", "processed_at": 0.0}],
        )
    async with engine.connect() as conn:
        for count in (1, 2, 3, 5, 8, 13):  # padded to 1, 2, 4, 8, 8, 16 parameters
            keys = [f"m{i}" for i in range(count)]
            assert await lookup.existing(conn, "g", keys) == {k for k in keys if int(k[1:]) % 2 == 0}
        assert await lookup.existing(conn, "other", ["m0", "m1"]) == {"m1"}
        assert await lookup.existing(conn, "g", []) == set()
