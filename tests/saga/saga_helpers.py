"""Shared pieces of the saga tests: a per-test database, a recording "remote service", waiting.

Each test gets its own SQLite file, or on PostgreSQL its own table prefix (dropped afterwards),
so the tests run in parallel without seeing each other's sagas.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from saga_ledger import make_engine
from sqlalchemy.ext.asyncio import AsyncEngine

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


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


database = pytest.mark.parametrize("kind", DATABASES)
