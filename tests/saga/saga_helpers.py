"""Shared pieces of the saga tests: a per-test database, a recording "remote service", waiting.

Each test gets its own SQLite file, or on PostgreSQL its own table prefix (dropped afterwards),
so the tests run in parallel without seeing each other's sagas.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from saga_ledger import make_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import require
from edgeway.bus.transport import Backoff
from edgeway.saga import OrchestratorConfig, Retry, Saga, SagaOrchestrator, SagaStatus
from edgeway.saga.store import SagaRecord, SagaStore, StepRecord

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


def saga_record(saga_id: str, name: str) -> SagaRecord:
    """A new running saga with one step "a", as ``run`` would insert it."""
    return SagaRecord(
        id=saga_id,
        name=name,
        status=SagaStatus.RUNNING,
        data={},
        current_step=0,
        version=1,
        created_at=time.time(),
        steps={"a": StepRecord("a", 0)},
    )


database = pytest.mark.parametrize("kind", DATABASES)
