"""A service's own database: SQLite by default, PostgreSQL by URL, one engine per process.

SQLite is put in WAL mode with a busy timeout: readers (an outbox relay, feeds) must not block
writers (requests) or the reverse, and a writer waits for the lock instead of failing with
"database is locked" (in the default rollback journal they wait in SQLite's busy handler, which
sleeps in steps up to 100 ms). ``synchronous`` stays ``FULL`` unless the service asks for
``NORMAL``: in WAL mode ``NORMAL`` is consistent but may lose the last commits at a power cut.

With ``schema`` the tables live in that PostgreSQL schema (through ``schema_translate_map``),
created at :meth:`Database.create` if missing; a test can give each run its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from edgeway.bus.upgrade import add_missing_columns

__all__ = ["Database"]

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Database:
    """An async engine and session factory for ``url``, and the tables of ``metadata``."""

    def __init__(
        self,
        url: str,
        metadata: MetaData,
        *,
        schema: str | None = None,
        sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if schema is not None and not _SCHEMA.match(schema):
            raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
        self.url = url
        self.metadata = metadata
        self.schema = schema
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            pragmas = ("journal_mode=WAL", f"synchronous={sqlite_synchronous}", "busy_timeout=10000")
            event.listen(engine.sync_engine, "connect", _Pragmas(pragmas))
        self._root = engine
        self.engine: AsyncEngine = (
            engine if schema is None else engine.execution_options(schema_translate_map={None: schema})
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def create(self) -> None:
        """Create the schema and the tables that do not exist yet, and add the nullable columns
        that tables made by an older version lack (a stand-in for migrations; see
        :mod:`edgeway.bus.upgrade`: the outbox gained its trace columns that way).

        Two instances sharing a database may race: the loser's CREATE fails with "already
        exists", and a second pass finds the tables there.
        """
        for attempt in range(3):
            try:
                async with self.engine.begin() as conn:
                    if self.schema is not None:
                        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    await conn.run_sync(self.metadata.create_all)
                    await add_missing_columns(conn, self.metadata.sorted_tables)
                return
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                if ("already exists" not in str(exc) and "duplicate" not in str(exc).lower()) or attempt == 2:
                    raise

    async def ping(self) -> None:
        """One round trip (the readiness check ``create_service`` registers)."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self._root.dispose()

    def session(self) -> AsyncSession:
        return self.sessions()


class _Pragmas:
    def __init__(self, pragmas: tuple[str, ...]) -> None:
        self.pragmas = pragmas

    def __call__(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in self.pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()
