"""A service's own database: SQLite by default, PostgreSQL by URL, one engine per process.

SQLite is put in WAL mode with a busy timeout: the two catalog instances share one file, and the
outbox relay writes while requests do, so readers must not block writers and a writer must wait
for the lock instead of failing with "database is locked".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

__all__ = ["Database"]


class Database:
    def __init__(self, url: str, metadata: MetaData) -> None:
        self.url = url
        self.metadata = metadata
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def create(self) -> None:
        """Create the tables that do not exist yet (the demo's stand-in for migrations).

        Two instances sharing a database (the catalog's) may race: the loser's CREATE fails with
        "already exists", and a second pass finds the tables there.
        """
        for attempt in range(3):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(self.metadata.create_all)
                return
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                if ("already exists" not in str(exc) and "duplicate" not in str(exc).lower()) or attempt == 2:
                    raise

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        return self.sessions()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
