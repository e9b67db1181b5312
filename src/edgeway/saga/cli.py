"""``edgeway saga …``: list, show and retry sagas in a service's database.

The database is given by ``--db`` or ``EDGEWAY_SAGA_DB``, as a SQLAlchemy URL; the plain forms
``sqlite:///orders.db`` and ``postgresql://user@host/db`` are accepted and given their async
drivers (aiosqlite, asyncpg).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from edgeway.saga.errors import SagaError
from edgeway.saga.state import SagaSummary
from edgeway.saga.status import SagaStatus

if TYPE_CHECKING:
    from edgeway.saga.store import SagaStore

app = typer.Typer(no_args_is_help=True, help="List, inspect and retry sagas.")

T = TypeVar("T")

DB_OPTION = typer.Option(
    None, "--db", envvar="EDGEWAY_SAGA_DB", help="The service's database URL, e.g. sqlite:///orders.db"
)
PREFIX_OPTION = typer.Option("edgeway_saga", "--prefix", help="Saga table name prefix the service uses.")

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """``url`` with the async driver edgeway uses when it names none."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SagaError(f"{url!r} is not a database URL (e.g. sqlite:///orders.db, postgresql://host/db)")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def _with_store(db: str | None, prefix: str, action: Callable[[SagaStore], Awaitable[T]]) -> T:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine

    from edgeway.saga.store import SagaStore

    if not db:
        typer.echo("error: no database: pass --db or set EDGEWAY_SAGA_DB", err=True)
        raise typer.Exit(2)

    async def run() -> T:
        engine = create_async_engine(async_url(db))
        try:
            return await action(SagaStore(engine, prefix=prefix))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except SagaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except SQLAlchemyError as exc:
        detail = str(exc).splitlines()[0]
        typer.echo(f"error: cannot read the saga tables ({prefix}*) in {db}: {detail}", err=True)
        raise typer.Exit(1) from exc


def _row(summary: SagaSummary) -> dict[str, Any]:
    return summary.model_dump(mode="json")


@app.command("list")
def list_sagas(
    db: str | None = DB_OPTION,
    prefix: str = PREFIX_OPTION,
    status: list[SagaStatus] | None = typer.Option(None, "--status", "-s", help="Only these statuses."),
    name: str | None = typer.Option(None, "--name", "-n", help="Only sagas of this name."),
    attention: bool = typer.Option(
        False,
        "--attention",
        help="Only failed sagas and unfinished ones without progress (see --stuck-after).",
    ),
    stuck_after: float = typer.Option(
        300.0, "--stuck-after", help="Seconds without progress that count as stuck."
    ),
    limit: int = typer.Option(50, "--limit", help="At most this many."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """List sagas, newest first (or the ones needing attention, oldest update first)."""

    async def query(store: SagaStore) -> list[SagaSummary]:
        if attention:
            return await store.needs_attention(stuck_after=stuck_after, limit=limit)
        return await store.list(statuses=status or None, name=name, limit=limit)

    sagas = _with_store(db, prefix, query)
    if as_json:
        for summary in sagas:
            typer.echo(json.dumps(_row(summary)))
        return
    if not sagas:
        typer.echo("no sagas")
        return
    typer.echo(f"{'ID':<28} {'NAME':<20} {'STATUS':<13} {'STEP':>4}  {'UPDATED':<19}  ERROR")
    for s in sagas:
        error = s.error or ""
        error = error if len(error) <= 70 else error[:67] + "..."
        updated = s.updated_at.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(
            f"{s.id:<28} {s.name:<20} {s.status.value:<13} {s.current_step:>4}  {updated:<19}  {error}"
        )


@app.command("show")
def show_saga(
    saga_id: str = typer.Argument(..., help="The saga id (`saga list` shows them)."),
    db: str | None = DB_OPTION,
    prefix: str = PREFIX_OPTION,
) -> None:
    """Show one saga as JSON: status, error, data and every step with its result."""
    state = _with_store(db, prefix, lambda store: store.state(saga_id))
    typer.echo(json.dumps(state.model_dump(mode="json"), indent=2))


@app.command("retry")
def retry_saga(
    saga_id: str = typer.Argument(..., help="The id of a failed saga."),
    db: str | None = DB_OPTION,
    prefix: str = PREFIX_OPTION,
) -> None:
    """Compensate a failed saga again with a fresh budget (after fixing what made it fail).

    The service's orchestrator picks it up at its next scan.
    """
    _with_store(db, prefix, lambda store: store.retry(saga_id))
    typer.echo(f"saga {saga_id} is compensating again; the service's orchestrator resumes it")
