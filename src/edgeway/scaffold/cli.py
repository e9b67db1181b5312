"""``edgeway new``: a service or an edge, from the package's templates, into a repository."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from edgeway.scaffold.generate import PATTERNS, Generated, ScaffoldError, new_gateway, new_service
from edgeway.scaffold.names import ScaffoldNameError

app = typer.Typer(no_args_is_help=True, help="Create a service or an edge from a template.")

_DIR = typer.Option(
    Path("."), "--dir", "-d", help="The repository's root (created if missing).", show_default=True
)


def _fail(message: str) -> NoReturn:
    typer.secho(f"edgeway new: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _report(what: str, done: Generated) -> None:
    typer.echo(f"created {what} in {done.root}:")
    for path in done.files:
        typer.echo(f"  {path}")
    entry = done.system_entry
    verb = "created with" if done.system_created else "added to"
    typer.echo(f"{verb} {done.system_file.name}: {entry.section}.{entry.name}")
    for change in done.edges:
        if change.changed:
            typer.echo(f"included in edge {change.edge!r}: {change.include} ({change.config.name})")
    typer.echo("next:")
    for step in done.next_steps:
        typer.echo(f"  {step}")
    system = done.system_file
    typer.echo(f"  edgeway system check {system}")
    typer.echo(f"  edgeway demo --system {system}   # the whole system on this machine")


@app.command()
def service(
    name: str = typer.Argument(..., help="lowercase letters, digits and hyphens, e.g. order-history"),
    directory: Path = _DIR,
    edges: bool = typer.Option(
        True, "--edges/--no-edges", help="Add its routes to the include list of every edge of the system."
    ),
) -> None:
    """A service on the kit: app, settings, health check, an event handler, tests, a gateway route,
    its image recipe, and its entry in the system file (edgeway.system.yaml)."""
    try:
        done = new_service(directory, name, include_in_edges=edges)
    except (ScaffoldNameError, ScaffoldError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write into {directory}: {exc}")
    _report(f"service {name!r}", done)


@app.command()
def gateway(
    name: str = typer.Argument(..., help="lowercase letters, digits and hyphens, e.g. web-bff"),
    pattern: str = typer.Option(
        "gateway", "--pattern", "-p", help=f"the edge's pattern: {' or '.join(PATTERNS)}"
    ),
    directory: Path = _DIR,
) -> None:
    """An edge (API gateway or BFF): its config, routing every service in edges/routes/, a test,
    and its entry in the system file (edgeway.system.yaml)."""
    try:
        done = new_gateway(directory, name, pattern)
    except (ScaffoldNameError, ScaffoldError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write into {directory}: {exc}")
    _report(f"{pattern} {name!r}", done)
