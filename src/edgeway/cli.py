"""The ``edgeway`` command.

Each package that has commands owns a ``cli.py`` with a ``typer.Typer`` named ``app``; this module
only mounts them, so adding a command never means editing a shared file. Heavy imports stay inside
the command functions so ``edgeway --help`` starts fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="edgeway",
    help="The edge and the wiring of a Python microservice system.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# (command name, module holding `app`, help). Order is the order `edgeway --help` shows.
_SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("gateway", "edgeway.gateway.cli", "Run an API gateway or BFF from a config file."),
    ("config", "edgeway.gateway.config_cli", "Check gateway config files; print the JSON Schema."),
    ("security", "edgeway.security.cli", "Run and manage the security service."),
    ("bus", "edgeway.bus.cli", "Event bus tools: embedded NATS, dead letters."),
    ("saga", "edgeway.saga.cli", "List, inspect and retry sagas in a service's database."),
    ("bench", "edgeway.bench_cli", "Benchmarks: edgeway side by side with nginx and aiohttp."),
    ("demo", "edgeway.demo.cli", "Start the reference system on this machine."),
]


def _mount() -> None:
    for name, module_name, help_text in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a missing *edgeway* module means "not built yet"; a missing dependency is a
            # broken install and must surface.
            if exc.name is not None and exc.name.startswith(module_name.rsplit(".", 1)[0]):
                continue
            raise
        sub = getattr(module, "app", None)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name, help=help_text)


@app.callback()
def _root() -> None:
    """The edge and the wiring of a Python microservice system."""


@app.command()
def version() -> None:
    """Print the edgeway version."""
    from edgeway import __version__

    typer.echo(__version__)


_mount()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
