"""End-to-end event throughput: edgeway's outbox -> NATS -> idempotent inbox handler, against
raw nats-py JetStream publish/consume, on one embedded nats-server in the same run.

Producer and consumer run in separate processes in both legs, as two services would (and so
the two cores of the reference machine are both used); both use uvloop.

edgeway leg: the "orders" process writes events into its outbox on SQLite (transactions of
``write_batch`` events, as request handlers would) and its relay publishes them in pipelined
batches; the "billing" process applies the events with an idempotent batch handler
(``subscribe_batch``: one ``executemany`` of one row per event with SQLAlchemy, message ids
recorded by the inbox in the same transaction). The clock
runs from the first outbox write to the last commit in billing.

raw leg: the same number of messages published with ``publish_async`` (a window of acks) and
consumed with a pull consumer (fetch 500, ack each), no database: the broker's ceiling here.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import multiprocessing
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from edgeway.bus.events import Event

TARGET_EPS = 10_000
TARGET_RATIO = 0.6
PAYLOAD = b'{"order_id":"o-000000","total_cents":1234}'


class OrderPlaced(Event):
    order_id: str
    total_cents: int


def _use_channel(channel: str) -> None:
    OrderPlaced.channel = channel
    OrderPlaced.event_type = "order.placed.v1"


def _loop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - Windows
        pass


def _sqlite(path: Path) -> Any:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL + synchronous=NORMAL: the recommended SQLite setting for a service database.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


# -- consumer processes -----------------------------------------------------------------------------


def _raw_consumer(url: str, stream: str, events: int, out: Any) -> None:
    _loop()

    async def main() -> float:
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()
        psub = await js.pull_subscribe(f"{stream}.>", durable="raw", stream=stream)
        out.put("ready")
        received = 0
        while received < events:
            try:
                msgs = await psub.fetch(500, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
            received += len(msgs)
        finished = time.time()
        await nc.flush()
        await nc.close()
        return finished

    out.put(asyncio.run(main()))


def _edgeway_consumer(url: str, channel: str, events: int, directory: str, out: Any) -> None:
    _loop()
    _use_channel(channel)

    async def main() -> float:
        from sqlalchemy import Column, Integer, MetaData, String, Table, insert
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

        from edgeway.bus.bus import EventBus
        from edgeway.bus.inbox import Inbox
        from edgeway.bus.nats import NatsTransport
        from edgeway.bus.transport import ChannelConfig

        engine = _sqlite(Path(directory) / "billing.db")
        metadata = MetaData()
        invoices = Table(
            "invoices",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("order_id", String(32), nullable=False),
            Column("total_cents", Integer, nullable=False),
        )
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        inbox = Inbox(sessions, metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        applied = 0
        done = asyncio.Event()

        async def bill(event: OrderPlaced, session: AsyncSession) -> None:
            nonlocal applied
            await session.execute(
                insert(invoices), [{"order_id": event.order_id, "total_cents": event.total_cents}]
            )
            applied += 1
            if applied >= events:
                done.set()

        bus = EventBus(NatsTransport(url), channels=[ChannelConfig(channel)], batch_size=500)
        bus.add_handler(OrderPlaced, bill, group="billing", inbox=inbox)
        async with bus:
            out.put("ready")
            await done.wait()
            finished = time.time()
        await engine.dispose()
        return finished

    out.put(asyncio.run(main()))


def _start(target: Any, *args: Any) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, out), daemon=True)
    process.start()
    if out.get(timeout=60) != "ready":
        raise BenchError("the consumer process did not start")
    return process, out


def _finish(process: Any, out: Any, started: float) -> float:
    try:
        finished = float(out.get(timeout=300))
    except Exception as exc:
        process.kill()
        raise BenchError(f"the consumer process did not finish: {exc}") from exc
    process.join(10)
    return finished - started


# -- producer legs ----------------------------------------------------------------------------------


async def _raw(url: str, events: int) -> float:
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"RAW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    await js.add_consumer(stream, api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT))
    process, out = await asyncio.to_thread(_start, _raw_consumer, url, stream, events)
    started = time.time()
    for i in range(events):
        await js.publish_async(f"{stream}.e", PAYLOAD, headers={"Nats-Msg-Id": f"m{i}"})
    await js.publish_async_completed()
    elapsed = await asyncio.to_thread(_finish, process, out, started)
    await js.delete_stream(stream)
    await nc.close()
    return events / elapsed


async def _edgeway(url: str, events: int, directory: Path, write_batch: int) -> float:
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from edgeway.bus.bus import EventBus
    from edgeway.bus.nats import NatsTransport
    from edgeway.bus.outbox import Outbox, OutboxRelay
    from edgeway.bus.transport import ChannelConfig

    channel = f"bench-{uuid.uuid4().hex[:8]}"
    _use_channel(channel)
    engine = _sqlite(directory / "orders.db")
    metadata = MetaData()
    outbox = Outbox(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    config = ChannelConfig(channel)
    bus = EventBus(NatsTransport(url), channels=[config])
    relay = OutboxRelay(outbox, sessions, bus, batch_size=2000, idle_interval=0.05)
    async with bus:
        await bus.transport.declare(config)
        process, out = await asyncio.to_thread(
            _start, _edgeway_consumer, url, channel, events, str(directory)
        )
        started = time.time()
        relay.start()
        for start in range(0, events, write_batch):
            batch = [
                OrderPlaced(order_id=f"o-{i:06d}", total_cents=1234)
                for i in range(start, start + write_batch)
            ]
            async with sessions() as session, session.begin():
                await outbox.add_many(session, batch)
            relay.wake()
        elapsed = await asyncio.to_thread(_finish, process, out, started)
        await relay.stop()
    await engine.dispose()
    return events / elapsed


async def _main(events: int, write_batch: int) -> dict[str, Any]:
    from edgeway.bus.embedded import EmbeddedNats

    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-bus-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    try:
        async with EmbeddedNats(port=port, data_dir=directory / "nats") as server:
            raw_eps = await _raw(server.url, events)
            edgeway_eps = await _edgeway(server.url, events, directory, write_batch)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ratio = edgeway_eps / raw_eps if raw_eps else 0.0
    return {
        "events": events,
        "edgeway_eps": round(edgeway_eps),
        "raw_eps": round(raw_eps),
        "ratio": round(ratio, 3),
        "target_eps": TARGET_EPS,
        "target_ratio": TARGET_RATIO,
        "meets_targets": edgeway_eps >= TARGET_EPS and ratio >= TARGET_RATIO,
    }


def run(json: bool = False, events: int = 20_000, write_batch: int = 500) -> dict[str, Any]:
    """Run both legs and print the result (a table, or one JSON object with ``json``)."""
    _loop()
    result = asyncio.run(_main(events, write_batch))
    if json:
        print(jsonlib.dumps(result))
    else:
        print(f"events per leg          {result['events']:>10,}")
        print(f"edgeway (outbox->inbox) {result['edgeway_eps']:>10,} events/s  (target {TARGET_EPS:,})")
        print(f"raw nats-py JetStream   {result['raw_eps']:>10,} events/s")
        print(f"ratio                   {result['ratio']:>10}  (target {TARGET_RATIO})")
    return result
