"""Two small services on the event bus, run as real processes by the bus benchmarks and fault tests.

``orders``: writes ``OrderPlaced`` events into its outbox on SQLite (transactions of
``--write-batch`` events, as request handlers would) and, unless ``--no-relay``, relays them in
the same process, as a service does. ``relay``: only the relay, over an outbox another process
filled. ``billing``: applies the events with an idempotent batch handler — one ``invoices`` row
per event, written with one ``executemany`` per batch, message ids recorded by the inbox in the
same transaction; the table has no unique constraint, so an event applied twice shows up as a
second row. ``raw-sub``: the baseline consumer, plain nats-py (fetch 500, ack each), no database.

Every process prints its progress as JSON lines on stdout (``{"ready": ...}``,
``{"batch": n}``, ``{"done": ...}``); :class:`ServiceProcess` starts one and reads them, so a test
can wait for "mid-batch" and SIGKILL it there.

    python -m bench.bus_services orders --db o.db --url nats://127.0.0.1:4222 --channel c --events 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import ProcessFailed
from bench.harness import REPO_ROOT, python_env
from edgeway.bus.events import Event
from edgeway.process_tuning import freeze_heap

ROLES = ("orders", "relay", "billing", "raw-sub")


class OrderPlaced(Event):
    order_id: str
    total_cents: int


def use_channel(channel: str) -> type[OrderPlaced]:
    """Point the event class at this run's channel (a fresh channel per run keeps runs apart)."""
    OrderPlaced.channel = channel
    OrderPlaced.event_type = "order.placed.v1"
    return OrderPlaced


def order_id(i: int) -> str:
    return f"o-{i:07d}"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def ready(args: argparse.Namespace, **fields: Any) -> None:
    """Report ready; with ``--gc-freeze`` first move everything allocated so far (imports, setup)
    out of the collector's reach, as the service kit does once a service has started."""
    if args.gc_freeze:
        freeze_heap()
    emit(ready=True, **fields)


def sqlite_engine(path: Path) -> Any:
    """The service database: SQLite in WAL mode with synchronous=NORMAL (the recommended setting)."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


def _bus(args: argparse.Namespace, *, batch_size: int = 100) -> Any:
    from edgeway.bus.brokers import transport_for
    from edgeway.bus.bus import EventBus
    from edgeway.bus.transport import ChannelConfig

    config = ChannelConfig(args.channel, ack_wait=args.ack_wait)
    return EventBus(transport_for(args.url, args.prefix), channels=[config], batch_size=batch_size), config


# -- orders: outbox writes (+ relay) ----------------------------------------------------------------


async def _orders(args: argparse.Namespace) -> None:
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from edgeway.bus.outbox import Outbox, OutboxRelay

    event = use_channel(args.channel)
    engine = sqlite_engine(Path(args.db))
    metadata = MetaData()
    outbox = Outbox(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bus, config = _bus(args)
    relay = OutboxRelay(
        outbox, sessions, bus, batch_size=args.relay_batch, idle_interval=0.05, retry_interval=0.2
    )
    async with bus:
        await bus.transport.declare(config)
        ready(args)
        started, cpu = time.time(), time.process_time()
        if args.relay:
            relay.start()
        end = args.start + args.events
        for first in range(args.start, end, args.write_batch):
            last = min(end, first + args.write_batch)
            batch = [event(order_id=order_id(i), total_cents=1234) for i in range(first, last)]
            async with sessions() as session, session.begin():
                await outbox.add_many(session, batch)
            relay.wake()
            emit(wrote=last - args.start)
            if args.pace:
                await asyncio.sleep(args.pace)
        wrote_at = time.time()
        if args.relay:
            while await relay.count_backlog() > 0:
                await asyncio.sleep(0.02)
            await relay.stop()
        cpu = time.process_time() - cpu
        emit(done=True, started=started, wrote_at=wrote_at, finished=time.time(), cpu=cpu)
    await engine.dispose()


async def _relay(args: argparse.Namespace) -> None:
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from edgeway.bus.outbox import Outbox, OutboxRelay

    use_channel(args.channel)
    engine = sqlite_engine(Path(args.db))
    outbox = Outbox(MetaData())
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bus, config = _bus(args)
    relay = OutboxRelay(outbox, sessions, bus, batch_size=args.relay_batch)
    async with bus:
        await bus.transport.declare(config)
        ready(args, backlog=await relay.count_backlog())
        while True:
            count = await relay.relay_once()
            if count == 0:
                break
            emit(published=relay.published)
        emit(done=True, published=relay.published)
    await engine.dispose()


# -- billing: the idempotent consumer ---------------------------------------------------------------


async def _billing(args: argparse.Namespace) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from edgeway.bus.inbox import Inbox

    event = use_channel(args.channel)
    engine = sqlite_engine(Path(args.db))
    metadata = MetaData()
    invoices = Table(
        "invoices",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("order_id", String(32), nullable=False),  # deliberately not unique: doubles show
        Column("total_cents", Integer, nullable=False),
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    inbox = Inbox(sessions, metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    count = select(func.count()).select_from(invoices)
    async with sessions() as session:
        applied = int((await session.execute(count)).scalar_one())
    done = asyncio.Event()
    batches = 0

    async def bill(events: list[OrderPlaced], session: AsyncSession) -> None:
        nonlocal applied, batches
        await session.execute(
            insert(invoices), [{"order_id": e.order_id, "total_cents": e.total_cents} for e in events]
        )
        batches += 1
        if args.hold:
            emit(batch=batches, size=len(events))  # inside the transaction: a kill now is mid-batch
            await asyncio.sleep(args.hold)
        applied += len(events)
        if applied >= args.expect:
            done.set()

    bus, _ = _bus(args, batch_size=args.batch_size)
    bus.add_handler(event, bill, group=args.group, inbox=inbox, batch=True)
    cpu = time.process_time()
    async with bus:
        ready(args, applied=applied)
        if applied < args.expect:
            await done.wait()
        # The handler ran inside the inbox's transaction: wait for its commit to be visible.
        while True:
            async with sessions() as session:
                if int((await session.execute(count)).scalar_one()) >= args.expect:
                    break
            await asyncio.sleep(0.005)
        finished = time.time()
    emit(done=True, finished=finished, applied=applied, cpu=time.process_time() - cpu)
    await engine.dispose()


# -- the raw nats-py baseline -----------------------------------------------------------------------


async def _raw_sub(args: argparse.Namespace) -> None:
    import nats

    nc = await nats.connect(args.url)
    psub = await nc.jetstream().pull_subscribe_bind(durable="raw", stream=args.channel)
    ready(args)
    cpu = time.process_time()
    received = 0
    while received < args.expect:
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
    emit(done=True, finished=finished, cpu=time.process_time() - cpu)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus_services", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--url", required=True, help="nats://… or amqp://…")
    parser.add_argument("--channel", required=True, help="channel (raw-sub: the stream name)")
    parser.add_argument("--prefix", default="ew")
    parser.add_argument("--db", help="the service's SQLite file")
    parser.add_argument("--ack-wait", type=float, default=30.0)
    parser.add_argument("--events", type=int, default=0, help="orders: how many to write")
    parser.add_argument("--start", type=int, default=0, help="orders: number of the first order")
    parser.add_argument("--write-batch", type=int, default=500, help="orders: events per transaction")
    parser.add_argument("--pace", type=float, default=0.0, help="orders: seconds between transactions")
    parser.add_argument("--relay", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--relay-batch", type=int, default=2000)
    parser.add_argument("--group", default="billing")
    parser.add_argument("--batch-size", type=int, default=500, help="billing: messages per batch")
    parser.add_argument("--hold", type=float, default=0.0, help="billing: seconds to hold each transaction")
    parser.add_argument("--expect", type=int, default=0, help="billing, raw-sub: stop after this many")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once set up (see ready())")
    args = parser.parse_args(argv)
    _install_uvloop()
    role: Callable[[argparse.Namespace], Any] = {
        "orders": _orders,
        "relay": _relay,
        "billing": _billing,
        "raw-sub": _raw_sub,
    }[args.role]
    asyncio.run(role(args))


# -- the parent's side -------------------------------------------------------------------------------


class ServiceProcess:
    """One role as a child process; its JSON progress lines are collected as they come."""

    def __init__(self, role: str, args: Sequence[str], *, log_dir: Path, name: str | None = None) -> None:
        self.role = role
        self.name = name or role
        self.argv = [sys.executable, "-m", "bench.bus_services", role, *args]
        self.log_path = log_dir / f"{self.name}.stderr.log"
        self.lines: list[dict[str, Any]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self, ready_timeout: float = 30.0) -> dict[str, Any]:
        with self.log_path.open("wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=python_env(),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")
        return await self.wait_for(lambda line: "ready" in line, ready_timeout)

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    @property
    def exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first progress line ``match`` accepts; fails if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match(line):
                    return line
            seen = len(self.lines)
            if self._reader is not None and self._reader.done():
                raise ProcessFailed(self.name, "exited before the expected progress", self.log_tail())
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProcessFailed(self.name, f"no matching progress within {timeout} s", self.log_tail())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def kill(self) -> None:
        """SIGKILL, as a crash: no cleanup runs in the child."""
        if self._proc is not None and self._proc.returncode is None:
            os.killpg(self._proc.pid, signal.SIGKILL)

    async def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the process's ``done`` line and its exit."""
        line = await self.wait_for(lambda line: "done" in line, timeout)
        await self.stop()
        return line

    async def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5.0)
            except TimeoutError:
                self.kill()
                await self._proc.wait()
        if self._reader is not None:
            await self._reader

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


if __name__ == "__main__":
    main()
