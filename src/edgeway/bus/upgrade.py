"""Bringing tables an older version created up to the columns this version defines.

``metadata.create_all`` creates missing tables but never changes one that exists, so a database
made by an older edgeway keeps its old outbox (or saga) table after an upgrade, and the first
insert naming a new column fails. :func:`add_missing_columns` compares each table with the
database and adds the columns it lacks, on SQLite and PostgreSQL. Only nullable columns (or ones
with a server default) can be added to a table that has rows; a missing NOT NULL column is an
error that names the table and the column, for a real migration to handle.

It is cheap enough to run at every start (one catalogue read per table): the service kit's
``Database.create`` and the saga store's ``create_tables`` do. A service that runs its own
migrations (Alembic) adds the columns there instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import Connection, Table, inspect
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateColumn

__all__ = ["MissingColumnError", "add_missing_columns"]

log = logging.getLogger("edgeway.bus.upgrade")


class MissingColumnError(RuntimeError):
    """A table lacks a column that cannot be added in place (NOT NULL without a default)."""

    def __init__(self, table: str, column: str) -> None:
        super().__init__(
            f"table {table!r} has no column {column!r}, which this version defines as NOT NULL "
            "without a server default: it cannot be added to a table with rows here; add it with "
            "a migration (or drop the table if its rows can go)"
        )
        self.table = table
        self.column = column


async def add_missing_columns(conn: AsyncConnection, tables: Iterable[Table]) -> list[str]:
    """Add the columns of ``tables`` that their database tables lack; returns ``table.column``
    for each one added. Tables that do not exist are left alone (``create_all`` makes them).
    Run it in a transaction (``async with engine.begin() as conn``)."""
    wanted = list(tables)
    return await conn.run_sync(lambda sync: _add_missing(sync, wanted))


def _add_missing(conn: Connection, tables: list[Table]) -> list[str]:
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    inspector = inspect(conn)
    preparer = conn.dialect.identifier_preparer
    added: list[str] = []
    for table in tables:
        schema = translate.get(table.schema, table.schema)
        if not inspector.has_table(table.name, schema=schema):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        missing = [c for c in table.columns if c.name not in present]
        if not missing:
            continue
        name = preparer.quote(table.name)
        qualified = f"{preparer.quote_schema(schema)}.{name}" if schema else name
        for column in missing:
            if not column.nullable and column.server_default is None:
                raise MissingColumnError(table.name, column.name)
            definition = CreateColumn(column).compile(dialect=conn.dialect)
            guard = " IF NOT EXISTS" if conn.dialect.name == "postgresql" else ""
            try:
                conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD COLUMN{guard} {definition}")
            except (OperationalError, ProgrammingError) as exc:
                # Another replica starting at the same time added it first (SQLite has no
                # IF NOT EXISTS here): the column is there, which is all we wanted.
                if "duplicate column" not in str(exc).lower():
                    raise
            log.info(
                "added column %s to table %s (made by an older version)",
                column.name,
                table.name,
                extra={"table": table.name, "column": column.name},
            )
            added.append(f"{table.name}.{column.name}")
    return added
