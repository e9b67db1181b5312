"""``edgeway config``: check config files, print the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Check gateway config files; print the JSON Schema.")


@app.command()
def check(files: list[Path] = typer.Argument(..., help="Config files to check.")) -> None:
    """Validate each FILE; print `ok: FILE (...)` or every problem found. Exit 1 on any error."""
    from edgeway.gateway.config import ConfigError, load_config

    failed = False
    for file in files:
        try:
            config = load_config(file)
        except ConfigError as exc:
            failed = True
            for issue in exc.issues:
                typer.echo(str(issue))
            continue
        routes, services = len(config.routes), len(config.services)
        typer.echo(
            f"ok: {file} ({routes} route{'s' * (routes != 1)}, {services} service{'s' * (services != 1)})"
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of the gateway config (for editor completion and validation)."""
    from edgeway.gateway.config.json_schema import gateway_json_schema

    text = json.dumps(gateway_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
