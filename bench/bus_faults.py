"""Faults while events flow: the broker stops, a consumer or the relay is killed — count what survives.

Each scenario runs the services of :mod:`bench.bus_services` as real processes against a real
broker and then counts billing's ``invoices``: one row per order id is right; a missing id was
lost, a second row was applied twice (the table has no unique constraint on purpose).

* ``broker-stop`` / ``broker-kill``: the embedded nats-server is stopped (SIGTERM) or killed
  (SIGKILL) while ``orders`` writes and relays and ``billing`` applies, and restarted one second
  later on the same port and data directory. NATS only: it is the broker edgeway starts itself.
* ``consumer-kill``: billing is SIGKILLed inside a batch's transaction and another instance
  takes over (NATS and RabbitMQ).
* ``relay-kill``: a relay publishing a filled outbox is SIGKILLed mid-publish and another relay
  takes over (NATS and RabbitMQ).

``./dev bench bus-faults`` runs them all with 50,000 events for the broker faults; ``tests/bus/
test_faults.py`` runs the same functions (the 50,000-event broker stop in its own xdist group).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.bus_services import ServiceProcess, order_id
from bench.errors import BenchError
from bench.harness import machine, port_open

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
SCENARIOS = ("broker-stop", "broker-kill", "consumer-kill", "relay-kill")


@dataclass(frozen=True)
class Outcome:
    scenario: str
    broker: str
    events: int
    applied: int  # rows in billing's invoices
    lost: int  # order ids with no row
    applied_twice: int  # rows beyond the first for an order id
    seconds: float
    fault_mid_flow: bool  # the fault hit while events were still moving

    @property
    def exactly_once(self) -> bool:
        return self.lost == 0 and self.applied_twice == 0 and self.applied == self.events


class Broker:
    """Where the services connect, with a name prefix of their own (RabbitMQ is shared)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "rabbitmq" if url.startswith("amqp") else "nats"
        self.prefix = "f" + uuid.uuid4().hex[:10]
        self.channel = "orders"

    def args(self, *extra: str) -> list[str]:
        return ["--url", self.url, "--prefix", self.prefix, "--channel", self.channel, *extra]

    async def cleanup(self) -> None:
        """Delete what the services declared on RabbitMQ (a NATS run owns its whole server)."""
        if self.kind != "rabbitmq":
            return
        from edgeway.bus.rabbit import RabbitTransport
        from edgeway.bus.transport import ChannelConfig

        transport = RabbitTransport(self.url, prefix=self.prefix)
        await transport.connect()
        config = ChannelConfig(self.channel)
        await transport.declare(config)  # records the names the services created...
        await transport.declare_group(config, "billing")
        await transport.close()
        await transport.teardown()  # ...and deletes them


def count(billing_db: Path, events: int) -> tuple[int, int, int]:
    """Rows, lost ids and doubly applied rows in billing's database."""
    with sqlite3.connect(billing_db) as db:
        rows = [r[0] for r in db.execute("SELECT order_id FROM invoices")]
    unique = set(rows)
    lost = len({order_id(i) for i in range(events)} - unique)
    return len(rows), lost, len(rows) - len(unique)


def _outcome(scenario: str, broker: Broker, events: int, run: Path, started: float, mid: bool) -> Outcome:
    applied, lost, twice = count(run / "billing.db", events)
    return Outcome(
        scenario, broker.kind, events, applied, lost, twice, round(time.monotonic() - started, 1), mid
    )


def _billing(broker: Broker, run: Path, events: int, *extra: str, name: str = "billing") -> ServiceProcess:
    args = broker.args("--db", str(run / "billing.db"), "--expect", str(events), "--ack-wait", "2", *extra)
    return ServiceProcess("billing", args, log_dir=run, name=name)


def _orders(broker: Broker, run: Path, events: int) -> ServiceProcess:
    args = broker.args("--db", str(run / "orders.db"), "--events", str(events), "--ack-wait", "2")
    return ServiceProcess("orders", args, log_dir=run)


async def _stop(*services: ServiceProcess) -> None:
    for service in services:
        service.kill()
        await service.stop()


async def broker_fault(server: Any, events: int, run: Path, *, kill: bool) -> Outcome:
    """Stop (or kill) the embedded NATS ``server`` mid-flow, restart it on the same port and data."""
    broker = Broker(server.url)
    started = time.monotonic()
    billing = _billing(broker, run, events)
    orders = _orders(broker, run, events)
    try:
        await billing.start()
        await orders.start()
        await orders.wait_for(lambda line: line.get("wrote", 0) >= events // 4, 120)
        await asyncio.to_thread(server.kill if kill else server.stop)
        mid = not any("done" in line for line in orders.lines + billing.lines)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
        await orders.finish(timeout=300)
        await billing.finish(timeout=300)
    finally:
        await _stop(orders, billing)
    return _outcome("broker-kill" if kill else "broker-stop", broker, events, run, started, mid)


async def consumer_kill(broker: Broker, events: int, run: Path) -> Outcome:
    """SIGKILL billing inside its third batch's transaction; a second instance finishes."""
    started = time.monotonic()
    first = _billing(broker, run, events, "--batch-size", "200", "--hold", "0.3", name="billing-1")
    second = _billing(broker, run, events, "--batch-size", "200", name="billing-2")
    orders = _orders(broker, run, events)
    try:
        await first.start()
        await orders.start()
        await first.wait_for(lambda line: line.get("batch", 0) >= 3, 60)
        first.kill()  # rows of this batch written inside the transaction, not committed
        await first.stop()
        mid = True
        await second.start()
        await orders.finish(timeout=120)
        await second.finish(timeout=120)
    finally:
        await _stop(orders, first, second)
    return _outcome("consumer-kill", broker, events, run, started, mid)


async def relay_kill(broker: Broker, events: int, run: Path) -> Outcome:
    """SIGKILL a relay after its first confirmed batch, with the next one on the wire; another finishes."""
    started = time.monotonic()
    orders_db = str(run / "orders.db")
    billing = _billing(broker, run, events)
    writer = ServiceProcess(
        "orders", broker.args("--db", orders_db, "--events", str(events), "--no-relay"), log_dir=run
    )
    relay_args = broker.args("--db", orders_db, "--relay-batch", "1000")
    first = ServiceProcess("relay", relay_args, log_dir=run, name="relay-1")
    second = ServiceProcess("relay", relay_args, log_dir=run, name="relay-2")
    try:
        await billing.start()
        await writer.start()
        await writer.finish(timeout=120)  # the whole backlog is in the outbox
        await first.start()
        await first.wait_for(lambda line: line.get("published", 0) >= 1000, 60)
        first.kill()
        await first.stop()
        mid = max(line.get("published", 0) for line in first.lines) < events
        await second.start()
        await second.finish(timeout=120)
        await billing.finish(timeout=120)
    finally:
        await _stop(billing, writer, first, second)
    return _outcome("relay-kill", broker, events, run, started, mid)


async def _main(events: int, small: int, brokers: Sequence[str], directory: Path) -> list[Outcome]:
    from edgeway.bus.embedded import EmbeddedNats

    outcomes: list[Outcome] = []

    def fresh() -> Path:
        path = directory / uuid.uuid4().hex[:8]
        path.mkdir()
        return path

    for kill in (False, True):
        run = fresh()
        server = EmbeddedNats(port=0, data_dir=run / "nats")
        await asyncio.to_thread(server.start)
        try:
            outcomes.append(await broker_fault(server, events, run, kill=kill))
        finally:
            await asyncio.to_thread(server.stop)
    for kind in brokers:
        for scenario in (consumer_kill, relay_kill):
            run = fresh()
            if kind == "nats":
                server = EmbeddedNats(port=0, data_dir=run / "nats")
                await asyncio.to_thread(server.start)
                try:
                    outcomes.append(await scenario(Broker(server.url), small, run))
                finally:
                    await asyncio.to_thread(server.stop)
            else:
                broker = Broker(RABBIT_URL)
                try:
                    outcomes.append(await scenario(broker, small, run))
                finally:
                    await broker.cleanup()
    return outcomes


def run(json: bool = False, events: int = 50_000, small: int = 10_000) -> dict[str, Any]:
    """All scenarios: ``events`` for the broker faults, ``small`` for the process kills."""
    brokers = ["nats"] + (["rabbitmq"] if port_open("127.0.0.1", 5672) else [])
    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-faults-"))
    try:
        outcomes = asyncio.run(_main(events, small, brokers, directory))
    except BenchError:
        print(f"edgeway bench bus-faults: logs kept in {directory}")
        raise
    shutil.rmtree(directory, ignore_errors=True)
    failed = [o for o in outcomes if not o.exactly_once]
    result = {
        "outcomes": [{**asdict(o), "exactly_once": o.exactly_once} for o in outcomes],
        "all_exactly_once": not failed,
        "failed": bool(failed),
        "skipped": [] if "rabbitmq" in brokers else ["rabbitmq: nothing listens on 127.0.0.1:5672"],
        "machine": machine(),
    }
    if json:
        print(jsonlib.dumps(result))
        return result
    print(
        f"{'scenario':<14} {'broker':<9} {'events':>7} {'applied':>8} {'lost':>5} {'twice':>6} "
        f"{'s':>6}  mid-flow"
    )
    for o in outcomes:
        print(
            f"{o.scenario:<14} {o.broker:<9} {o.events:>7,} {o.applied:>8,} {o.lost:>5} "
            f"{o.applied_twice:>6} {o.seconds:>6}  {'yes' if o.fault_mid_flow else 'NO'}"
        )
    print(
        "every event applied exactly once"
        if not failed
        else f"{len(failed)} scenario(s) lost or doubled events"
    )
    return result
