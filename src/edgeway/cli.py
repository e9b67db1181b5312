"""The ``edgeway`` command.

Each package that has commands owns a ``cli.py`` with a ``typer.Typer`` named ``app``; this module
only mounts them, so adding a command never means editing a shared file. Heavy imports stay inside
the command functions so ``edgeway --help`` starts fast.

``edgeway <command> …`` mounts only that command's package: a gateway process must not carry the
saga store, the bus and the security service in memory (about 30 MB of modules it never calls).
``edgeway --help`` and ``from edgeway.cli import app`` get every command.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# (command name, module holding `app`, help). Order is the order `edgeway --help` shows.
_SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("gateway", "edgeway.gateway.process.cli", "Run an API gateway or BFF from a config file."),
    ("config", "edgeway.gateway.process.config_cli", "Check gateway config files; print the JSON Schema."),
    ("security", "edgeway.security.cli", "Run and manage the security service."),
    ("bus", "edgeway.bus.cli", "Event bus tools: embedded NATS, dead letters."),
    ("saga", "edgeway.saga.cli", "List, inspect and retry sagas in a service's database."),
    ("bench", "edgeway.bench_cli", "Benchmarks: edgeway side by side with nginx and aiohttp."),
    ("demo", "edgeway.demo.cli", "Start the reference system on this machine."),
]


def _root() -> None:
    """The edge and the wiring of a Python microservice system."""


def version() -> None:
    """Print the edgeway version and whether its engine is compiled (mypyc) or interpreted."""
    from edgeway import __version__
    from edgeway.build import engine_build

    typer.echo(f"{__version__} ({engine_build()})")


def build_app(only: str | None = None) -> typer.Typer:
    """The command tree; with ``only``, just that subcommand is mounted (and imported)."""
    root = typer.Typer(
        name="edgeway",
        help="The edge and the wiring of a Python microservice system.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    root.callback()(_root)
    root.command()(version)
    for name, module_name, help_text in _SUBCOMMANDS:
        if only is not None and name != only:
            continue
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
            root.add_typer(sub, name=name, help=help_text)
    return root


def __getattr__(name: str) -> Any:
    # `app` is built on first use so that importing this module (as `main` does) mounts nothing.
    if name == "app":
        tree = build_app()
        globals()["app"] = tree
        return tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    first = sys.argv[1] if len(sys.argv) > 1 else None
    known = {name for name, _, _ in _SUBCOMMANDS}
    build_app(first if first in known else None)()


if __name__ == "__main__":
    main()
