"""Read copies follow change events and rebuild from the channel's history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, select

from edgeway.bus.bus import EventBus
from edgeway.bus.events import Event
from edgeway.bus.readcopy import ReadCopy
from edgeway.bus.transport import ChannelConfig

from .conftest import BrokerUnderTest
from .db import Database


def user_events(channel: str) -> tuple[type[Event], type[Event]]:
    class UserChanged(Event):
        user_id: str
        name: str
        version: int

    class UserDeleted(Event):
        user_id: str

    UserChanged.channel = UserDeleted.channel = channel
    UserChanged.event_type = "user.changed.v1"
    UserDeleted.event_type = "user.deleted.v1"
    return UserChanged, UserDeleted


async def _rows(db: Database, table: Table) -> dict[str, tuple[str, int]]:
    async with db.sessions() as session:
        result = await session.execute(select(table.c.id, table.c.name, table.c.version))
        return {row.id: (row.name, row.version) for row in result}


async def test_a_read_copy_follows_changes_and_rebuilds_from_the_beginning(
    broker: BrokerUnderTest, database: Database, unique: Callable[[str], str]
) -> None:
    changed, deleted = user_events(unique("users"))
    metadata = MetaData()
    table = Table(
        f"users_copy_{unique('t').replace('-', '_')}",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("version", Integer, nullable=False),
    )
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        copy = ReadCopy(database.sessions, table, key="id", version="version")

        @copy.upsert(changed)
        def _(event: Any) -> dict[str, object]:
            return {"id": event.user_id, "name": event.name, "version": event.version}

        @copy.delete(deleted)
        def _(event: Any) -> object:
            return event.user_id

        config = ChannelConfig(changed.channel)
        users_service = EventBus(broker.make(), channels=[config])
        orders_service = EventBus(broker.make(), channels=[config])
        copy.attach(orders_service, group="orders-users")
        expected = {"u1": ("Ada Lovelace", 2), "u3": ("Grace", 1)}
        async with orders_service, users_service:
            await users_service.publish(changed(user_id="u1", name="Ada", version=1))
            await users_service.publish(changed(user_id="u2", name="Bob", version=1))
            await users_service.publish(changed(user_id="u1", name="Ada Lovelace", version=2))
            await users_service.publish(changed(user_id="u3", name="Grace", version=1))
            await users_service.publish(deleted(user_id="u2"))
            await asyncio.sleep(0.2)
            # An old change arriving late (a redelivery) must not overwrite the newer state.
            await users_service.publish(changed(user_id="u1", name="Ada (stale)", version=1))

            async def settled() -> None:
                for _ in range(200):
                    current = await _rows(database, table)
                    if current == expected:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"read copy never reached {expected}: {current}")

            await settled()
            await asyncio.sleep(0.3)
            assert await _rows(database, table) == expected

            async with database.sessions() as session, session.begin():  # the local table is lost
                await session.execute(delete(table))
            applied = await copy.rebuild(orders_service)
            assert applied == 6
            assert await _rows(database, table) == expected
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
