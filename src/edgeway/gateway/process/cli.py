"""``edgeway gateway``: run an API gateway or BFF from a config file."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=False)


@app.callback(invoke_without_command=True)
def gateway(
    config: Path = typer.Option(..., "--config", "-c", help="Gateway YAML config file."),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Processes sharing the port (overrides `workers:`)."
    ),
) -> None:
    """Run a gateway (or one BFF profile) until SIGTERM; then drain gracefully."""
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.gateway.process.serve import serve

    try:
        serve(config, workers)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except FileNotFoundError as exc:
        typer.echo(f"edgeway gateway: {exc}", err=True)
        raise typer.Exit(2) from None
