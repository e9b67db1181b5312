"""The databases' side of the rehearsal: PostgreSQL in the root namespace, reached from the nodes.

PostgreSQL listens on 127.0.0.1 in the root namespace, which no node can reach. Rather than
reconfigure a shared server, a ``socat`` forwarder listens on the bridge address
(``10.77.0.254:5432``) and relays to it: from the nodes' side PostgreSQL is one more host on the
network, as a managed database is to a Kubernetes cluster, and a node that is cut off loses its
database connections like every other. Each service gets a database of its own, named after the
run (``ewc<pid>_orders`` ...), dropped at the end.

:func:`read_facts` reads back what the services stored, for :mod:`bench.cluster_score`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

from bench.cluster_net import Teardown
from bench.cluster_score import Facts
from bench.errors import BenchError
from bench.harness import port_open, require_tool

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL = ("127.0.0.1", 5432)


def database_name(tag: str, service: str) -> str:
    return f"{tag}_{service}"


def service_url(host: str, tag: str, service: str) -> str:
    """The SQLAlchemy URL a service on a node uses: the forwarder on the bridge, its own database."""
    return f"postgresql+asyncpg://postgres@{host}:5432/{database_name(tag, service)}"


def start_forwarder(bind: str, log_dir: Path, teardown: Teardown) -> None:
    """``socat`` on ``bind``:5432 relaying to the local PostgreSQL, until the teardown."""
    if not port_open(*LOCAL):
        raise BenchError("PostgreSQL does not answer on 127.0.0.1:5432; the rehearsal stores the shop there")
    socat = require_tool("socat", "apt-get install socat")
    log = (log_dir / "socat.log").open("wb")
    proc = subprocess.Popen(
        [socat, f"TCP-LISTEN:5432,bind={bind},reuseaddr,fork,backlog=256", f"TCP:{LOCAL[0]}:{LOCAL[1]}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its per-connection children share the group: one kill ends all
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0),  # the database's side, not the client's
    )

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()

    teardown.push("stop the PostgreSQL forwarder", stop)
    for _ in range(100):
        if port_open(bind, 5432):
            return
        if proc.poll() is not None:
            raise BenchError(f"socat exited at start: {(log_dir / 'socat.log').read_text()[-500:]}")
        time.sleep(0.05)
    raise BenchError(f"socat did not listen on {bind}:5432")


async def create_databases(tag: str, services: Iterable[str]) -> list[str]:
    names = [database_name(tag, s) for s in services]
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return names


async def drop_databases(names: Iterable[str]) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def stale_databases(alive: Any) -> list[str]:
    """Databases of rehearsals that are gone (``ewc<pid>_*`` whose pid is not ``alive``)."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname ~ '^ewc[0-9]+_'")
    finally:
        await conn.close()
    return [r["datname"] for r in rows if not alive(int(r["datname"][3:].split("_")[0]))]


async def _fetch(tag: str, service: str, *queries: str) -> list[list[asyncpg.Record]]:
    """The queries' rows from one snapshot of the service's database (one repeatable-read
    transaction: stock and reservations, or orders and their outbox, seen at one moment)."""
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database_name(tag, service)}")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return [list(await conn.fetch(q)) for q in queries]
    finally:
        await conn.close()


async def raise_stock(tag: str, on_hand: int) -> dict[str, int]:
    """Give every product ``on_hand`` units, so a run never sells out; returns the levels set."""
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database_name(tag, 'inventory')}")
    try:
        await conn.execute("UPDATE stock SET on_hand = $1", on_hand)
        rows = await conn.fetch("SELECT sku, on_hand FROM stock")
    finally:
        await conn.close()
    return {r["sku"]: r["on_hand"] for r in rows}


async def read_facts(
    tag: str, initial_stock: dict[str, int], maildirs: Iterable[Path], wall_offset: float
) -> Facts:
    """What the databases (and the maildirs) hold after the run; times on the run's clock
    (wall-clock time minus ``wall_offset``)."""
    # The consumers first: whatever they hold was in the outbox before, so an event published
    # between the reads can only look not-yet-delivered (the drain reads again), never unknown.
    [inbox] = await _fetch(
        tag,
        "notifications",
        "SELECT message_id, processed_at FROM edgeway_inbox WHERE consumer_group = 'notifications-orders'",
    )
    [payments] = await _fetch(tag, "payments", "SELECT order_id, status FROM payments")
    stock, reservations = await _fetch(
        tag,
        "inventory",
        "SELECT sku, on_hand, reserved FROM stock",
        "SELECT order_id, status, items FROM reservations",
    )
    orders, outbox = await _fetch(
        tag,
        "orders",
        "SELECT id, status, idempotency_key FROM orders",
        "SELECT event_id, channel, payload, sent_at FROM edgeway_outbox WHERE channel = 'orders'",
    )
    published = []
    for row in outbox:
        event = json.loads(bytes(row["payload"]))
        published.append(
            (row["event_id"], str(event.get("order_id")), str(event.get("status")), row["sent_at"])
        )
    mails: list[str] = []
    for maildir in maildirs:
        for sub in ("new", "cur"):
            folder = maildir / sub
            if folder.is_dir():
                mails += [f.name.rsplit(".", 1)[0] for f in folder.iterdir()]
    return Facts(
        orders=[(r["id"], r["status"], r["idempotency_key"]) for r in orders],
        published=published,
        stock={r["sku"]: (r["on_hand"], r["reserved"]) for r in stock},
        initial_stock=dict(initial_stock),
        reservations=[(r["order_id"], r["status"], _items(r["items"])) for r in reservations],
        payments=[(r["order_id"], r["status"]) for r in payments],
        consumed={"notifications": {r["message_id"]: r["processed_at"] - wall_offset for r in inbox}},
        emails=mails,
    )


async def activity(tag: str) -> list[dict[str, Any]]:
    """The run's database sessions that are in a transaction or waiting: who holds what, for a
    second look at a kept run (``records.json``)."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        rows = await conn.fetch(
            "SELECT datname, host(client_addr) AS client, state, wait_event_type, wait_event,"
            " extract(epoch FROM now() - xact_start)::float8 AS xact_s, left(query, 80) AS query"
            " FROM pg_stat_activity WHERE datname LIKE $1 AND state <> 'idle'",
            f"{tag}\\_%",
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def _items(raw: Any) -> list[tuple[str, int]]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [(str(i["sku"]), int(i["qty"])) for i in items]
