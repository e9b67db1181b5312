"""``edgeway new``: a service or an edge, from the package's templates, into a repository."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
import yaml

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
    typer.echo("its entry for the system file (edgeway.system.yaml):")
    entry = yaml.safe_dump(done.system_entry.as_mapping(), sort_keys=False, default_flow_style=None)
    for line in entry.splitlines():
        typer.echo(f"  {line}")
    typer.echo("next:")
    for step in done.next_steps:
        typer.echo(f"  {step}")


@app.command()
def service(
    name: str = typer.Argument(..., help="lowercase letters, digits and hyphens, e.g. order-history"),
    directory: Path = _DIR,
) -> None:
    """A service on the kit: app, settings, health check, an event handler, tests, a gateway route."""
    try:
        done = new_service(directory, name)
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
    """An edge (API gateway or BFF): its config, routing every service in edges/routes/, and a test."""
    try:
        done = new_gateway(directory, name, pattern)
    except (ScaffoldNameError, ScaffoldError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write into {directory}: {exc}")
    _report(f"{pattern} {name!r}", done)
