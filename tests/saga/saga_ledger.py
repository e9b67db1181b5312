"""What the crash-test subprocess shares with the tests: an engine factory, the ledger, the saga.

No imports from the test tree, so ``saga_worker.py`` can run as a plain script.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from edgeway.saga import Saga, StepContext, StepFailed


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


class CrashData(BaseModel):
    order_id: str


def crash_saga(
    ledger: Ledger, *, fail_at: str | None = None, hang_at: str | None = None, marker: Path | None = None
) -> Saga[CrashData]:
    """Steps a, b, c; each applies its effect to the ledger (once per idempotency key).

    ``hang_at`` ("b" or "b:compensate") applies the effect, then writes ``marker`` and hangs:
    the worst moment to die, with the effect done but not recorded. ``fail_at`` fails that step
    after its effect, so compensation runs.
    """
    saga = Saga("crashy", CrashData)

    async def effect(ctx: StepContext[CrashData]) -> str:
        name = f"{ctx.step}:compensate" if ctx.compensating else ctx.step
        ledger.call(name)
        ledger.apply(ctx.idempotency_key)
        if hang_at == name and marker is not None:
            marker.write_text(ctx.saga_id)
            await asyncio.sleep(3600)
        if fail_at == name:
            raise StepFailed(f"{name} refused")
        return name

    for step in ("a", "b", "c"):
        saga.add_step(step, effect, compensate=effect, timeout=120)
    return saga
