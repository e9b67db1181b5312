"""``edgeway system``: check a system file (and the edge configs it names)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Check a system file (edgeway.system.yaml).")


@app.callback()
def _system() -> None:
    """The system file: services, edges, broker, stores (docs/deploy.md)."""


@app.command()
def check(
    file: Path = typer.Argument(..., help="The system file, e.g. edgeway.system.yaml."),
    edges: bool = typer.Option(
        True, "--edges/--no-edges", help="Also load every edge's gateway config, as the demo would."
    ),
) -> None:
    """Validate FILE: print `ok: FILE (...)`, or every problem as file:line:col: key: message.
    Exit 2 on any problem."""
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.system.edges import edge_config_issues
    from edgeway.system.loader import instance_names, load_system

    try:
        loaded = load_system(file)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None
    if edges:
        issues = edge_config_issues(loaded)
        if issues:
            for issue in issues:
                typer.echo(str(issue), err=True)
            raise typer.Exit(2)
    system = loaded.model
    processes = sum(len(instance_names(system, name)) for name in system.services)
    broker = "RabbitMQ + NATS" if system.broker.rabbitmq else "NATS"
    typer.echo(
        f"ok: {file} ({len(system.services)} services in {processes} processes, "
        f"{len(system.edges)} edges, broker {broker}, pattern {system.pattern})"
    )
