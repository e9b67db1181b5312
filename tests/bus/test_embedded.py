"""The embedded nats-server: start on a free port, survive a broker restart without loss."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.bus import EventBus
from edgeway.bus.embedded import EmbeddedNats, find_nats_server
from edgeway.bus.errors import EmbeddedServerError
from edgeway.bus.events import Event
from edgeway.bus.nats import NatsTransport
from edgeway.bus.outbox import OutboxRelay
from edgeway.bus.transport import ChannelConfig

from .db import Database, close_database, open_database
from .helpers import eventually, order_events


async def _distinct_applied(database: Database, total: int) -> bool:
    return len(set(await database.applied_keys())) == total


def test_the_binary_is_found_next_to_the_interpreter() -> None:
    assert Path(find_nats_server()).name == "nats-server"


def test_a_port_in_use_is_reported_before_starting(tmp_path: Path) -> None:
    with (
        EmbeddedNats(port=0, data_dir=tmp_path / "a") as first,
        pytest.raises(EmbeddedServerError, match="in use"),
    ):
        EmbeddedNats(port=first.port, data_dir=tmp_path / "b").start()


def test_port_0_takes_a_free_port_and_reports_it(tmp_path: Path) -> None:
    with EmbeddedNats(port=0, data_dir=tmp_path / "a") as server:
        assert server.port > 0
        assert server.url == f"nats://127.0.0.1:{server.port}"
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
            assert conn.recv(4096).startswith(b"INFO ")  # a NATS server greets its clients


async def test_events_flowing_through_a_broker_crash_and_restart_are_applied_once_each(
    tmp_path: Path, unique: Callable[[str], str]
) -> None:
    database = await open_database("sqlite", str(tmp_path))
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    placed, _ = order_events(unique("orders"))
    applied: list[str] = []

    async def apply(event: Event, session: AsyncSession) -> None:
        applied.append(event.order_id)  # type: ignore[attr-defined]
        await session.execute(insert(database.applied), [{"key": event.order_id}])  # type: ignore[attr-defined]

    config = ChannelConfig(placed.channel, ack_wait=2.0)
    async with server:
        bus = EventBus(NatsTransport(server.url), channels=[config])
        bus.add_handler(placed, apply, group="ledger", inbox=database.inbox)
        relay = OutboxRelay(database.outbox, database.sessions, bus, batch_size=200, retry_interval=0.2)
        async with bus:
            relay.start()
            total = 3000
            for start in range(0, total, 100):
                async with database.sessions() as session, session.begin():
                    await database.outbox.add_many(
                        session, [placed(order_id=f"o{i}") for i in range(start, start + 100)]
                    )
                relay.wake()
                if start == 1000:
                    server.kill()  # the broker dies while events flow...
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(server.start)  # ...and comes back on the same data
            # Committed, not just handled: the handler runs before its batch's commit, and stopping
            # the bus then would roll the batch back (it comes again, but not in this test).
            await eventually(
                lambda: _distinct_applied(database, total), timeout=60, what=f"{total} events committed"
            )
            await relay.stop()
    keys = await database.applied_keys()
    await close_database(database)
    assert Counter(keys) == Counter(f"o{i}" for i in range(total))
