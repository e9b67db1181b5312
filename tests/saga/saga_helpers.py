"""Shared pieces of the saga tests: a per-test database, a recording "remote service", waiting.

Each test gets its own SQLite file, or on PostgreSQL its own table prefix (dropped afterwards),
so the tests run in parallel without seeing each other's sagas.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conftest import require
from edgeway.bus.transport import Backoff
from edgeway.saga import OrchestratorConfig, Retry, Saga, SagaOrchestrator
from edgeway.saga.store import SagaStore

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DATABASES = ["sqlite", "postgres"]

# Tiny timings so the tests run fast; they are what a test passes unless it needs others.
FAST = OrchestratorConfig(lease=2.0, poll_interval=0.05, stop_grace=1.0, ack_poll_interval=0.05)
TINY_BACKOFF = Backoff(initial=0.01, factor=2.0, maximum=0.05)
QUICK_RETRY = Retry(attempts=3, backoff=TINY_BACKOFF)
QUICK_COMPENSATION = Retry(attempts=3, backoff=TINY_BACKOFF, on=(Exception,))


def database_url(kind: str, directory: Path) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{directory}/service.db"
    return POSTGRES_URL


def make_engine(url: str) -> AsyncEngine:
    if not url.startswith("sqlite"):
        return create_async_engine(url)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _wal(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


@dataclass
class Db:
    kind: str
    url: str
    prefix: str
    engines: list[AsyncEngine]

    def engine(self) -> AsyncEngine:
        """A new engine on the test's database (one per orchestrator, like one per process)."""
        engine = make_engine(self.url)
        self.engines.append(engine)
        return engine

    def orchestrator(
        self, sagas: list[Saga[Any]], config: OrchestratorConfig = FAST, **kwargs: Any
    ) -> SagaOrchestrator:
        return SagaOrchestrator(self.engine(), sagas, config=config, table_prefix=self.prefix, **kwargs)

    def store(self) -> SagaStore:
        return SagaStore(self.engine(), prefix=self.prefix)


@asynccontextmanager
async def open_db(kind: str, directory: Path) -> AsyncIterator[Db]:
    if kind == "postgres":
        require("postgres")
    db = Db(kind, database_url(kind, directory), f"saga_{uuid.uuid4().hex[:10]}", [])
    try:
        yield db
    finally:
        if kind == "postgres":
            store = db.store()
            await store.drop_tables()
        for engine in db.engines:
            await engine.dispose()


class Ledger:
    """A stand-in for the remote services the steps call, in its own SQLite file.

    ``call`` records every invocation; ``apply`` applies an effect once per idempotency key
    (what a service honouring ``Idempotency-Key`` does) and keeps the order effects landed in.
    Plain sqlite3 so a subprocess and the test can both use it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def call(self, key: str) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO calls (key) VALUES (?)", (key,))

    def apply(self, key: str) -> bool:
        with self._connect() as conn:
            cursor = conn.execute("INSERT OR IGNORE INTO effects (key) VALUES (?)", (key,))
            return cursor.rowcount == 1

    def calls(self) -> list[str]:
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT key FROM calls ORDER BY seq")]

    def effects(self) -> list[str]:
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT key FROM effects ORDER BY seq")]


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


database = pytest.mark.parametrize("kind", DATABASES)
