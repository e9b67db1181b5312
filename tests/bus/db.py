"""A per-test database (SQLite file or PostgreSQL tables with unique names) for outbox/inbox tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from edgeway.bus.inbox import Inbox
from edgeway.bus.outbox import Outbox


@dataclass
class Database:
    kind: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metadata: MetaData
    outbox: Outbox
    inbox: Inbox
    applied: Table  # a business table: one row per applied effect

    async def applied_keys(self) -> list[str]:
        async with self.sessions() as session:
            return list((await session.execute(select(self.applied.c.key))).scalars())


async def open_database(kind: str, directory: str) -> Database:
    token = uuid.uuid4().hex[:10]
    if kind == "sqlite":
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{directory}/service.db", connect_args={"timeout": 30}
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _wal(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
    else:
        engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    metadata = MetaData()
    outbox = Outbox(metadata, table_name=f"outbox_{token}")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    inbox = Inbox(sessions, metadata, table_name=f"inbox_{token}")
    applied = Table(
        f"applied_{token}",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(64), nullable=False),
    )
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return Database(kind, engine, sessions, metadata, outbox, inbox, applied)


async def close_database(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(db.metadata.drop_all)
    await db.engine.dispose()
