"""The ``edgeway`` command.

Each package that has commands owns a ``cli.py`` with a ``typer.Typer`` named ``app``; this module
only mounts them, so adding a command never means editing a shared file. Heavy imports stay inside
the command functions so ``edgeway --help`` starts fast.

``edgeway <command> …`` mounts only that command's package: a gateway process must not carry the
saga store, the bus and the security service in memory (about 30 MB of modules it never calls).
``edgeway --help`` (and ``edgeway``, ``edgeway version``) mounts none: it lists each command by
the name and help of ``_SUBCOMMANDS``, where mounting them all imported FastAPI, SQLAlchemy, grpc
and the NATS client, about 1.5 s of CPU for a page of text. ``from edgeway.cli import app`` and
shell completion get the whole tree.

A command whose extra is not installed (``edgeway security`` without ``edgeway[security]``)
stays listed and, when run, says what to install and exits 2; so does any command that reaches
a package an extra installs (:mod:`edgeway.extras`).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import typer

from edgeway.extras import MissingExtraError, extra_for_module, missing

# (command name, module holding `app`, help, the extra it needs beyond the base install). Order is
# the order `edgeway --help` shows. `bus` needs no extra of its own: its commands need the
# broker's (nats or rabbitmq), which the broker URL decides (edgeway.bus.brokers).
_SUBCOMMANDS: list[tuple[str, str, str, str | None]] = [
    ("gateway", "edgeway.gateway.process.cli", "Run an API gateway or BFF from a config file.", None),
    (
        "config",
        "edgeway.gateway.process.config_cli",
        "Check gateway config files; print the JSON Schema.",
        None,
    ),
    ("security", "edgeway.security_service.cli", "Run and manage the security service.", "security"),
    ("bus", "edgeway.bus.cli", "Event bus tools: embedded NATS, dead letters.", None),
    ("tls", "edgeway.pki.cli", "Certificates for development: a local CA and loopback certificates.", None),
    ("saga", "edgeway.saga.cli", "List, inspect and retry sagas in a service's database.", "service"),
    ("demo", "edgeway.demo.cli", "Start the reference system on this machine.", "demo"),
    ("system", "edgeway.system.cli", "Check a system file (edgeway.system.yaml).", None),
    ("deploy", "edgeway.deploy.cli", "Render Kubernetes manifests or a compose project.", None),
    ("new", "edgeway.scaffold.cli", "Create a service or an edge (gateway, BFF) from templates.", "scaffold"),
    ("proto", "edgeway.service.grpc.cli", "Compile .proto files into typed Python (gRPC).", "proto"),
]


class CommandMountError(TypeError):
    """A command's module does not define the ``typer.Typer`` named ``app`` this module mounts."""


# Accept any arguments: a command whose extra is missing answers the same whatever was asked.
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _root() -> None:
    """The edge and the wiring of a Python microservice system."""


def version() -> None:
    """Print the edgeway version and whether its engine is compiled (mypyc) or interpreted."""
    from edgeway import __version__
    from edgeway.build import engine_build

    typer.echo(f"{__version__} ({engine_build()})")


def _fail(message: str) -> NoReturn:
    typer.secho(f"edgeway: {message}", err=True, fg=typer.colors.RED)
    raise SystemExit(2)


def _needs_extra(root: typer.Typer, name: str, help_text: str, error: MissingExtraError) -> None:
    """Mount ``name`` as a command that says which extra to install (exit 2), so ``edgeway --help``
    still lists it."""

    def run() -> None:
        _fail(str(error))

    # No brackets: typer reads help as rich markup, where "[security]" would be a style tag.
    run.__doc__ = f"{help_text} (Needs the '{error.extra}' extra, not installed.)"
    root.command(name, context_settings=_ANY_ARGS)(run)


def _bench() -> None:
    """The benchmarks are a developer command of a source checkout: ./dev bench … there."""
    _fail(
        "the benchmarks are not part of the installed package: in a source checkout run "
        "`./dev bench --help` (python -m bench, with the harness in bench/)"
    )


def _bare_root() -> typer.Typer:
    root = typer.Typer(
        name="edgeway",
        help="The edge and the wiring of a Python microservice system.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    root.callback()(_root)
    root.command()(version)
    root.command("bench", hidden=True, context_settings=_ANY_ARGS)(_bench)
    return root


def build_app(only: str | None = None) -> typer.Typer:
    """The command tree; with ``only``, just that subcommand is mounted (and imported)."""
    root = _bare_root()
    for name, module_name, help_text, extra in _SUBCOMMANDS:
        if only is not None and name != only:
            continue
        absent = missing(extra) if extra is not None else None
        if extra is not None and absent is not None:
            _needs_extra(root, name, help_text, MissingExtraError(f"`edgeway {name}`", extra, absent))
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            needed = extra_for_module(exc.name)
            if needed is None:
                raise  # not an optional package: a broken install must surface
            _needs_extra(
                root, name, help_text, MissingExtraError(f"`edgeway {name}`", needed, exc.name or needed)
            )
            continue
        sub = getattr(module, "app", None)
        if not isinstance(sub, typer.Typer):
            # A command that vanished from --help without a word is a broken install or a
            # broken module; say which, rather than skip it.
            raise CommandMountError(
                f"`edgeway {name}`: {module_name} has no typer.Typer named `app` "
                f"(found {type(sub).__name__}); every command module must define one"
            )
        root.add_typer(sub, name=name, help=help_text)
    return root


def _listed(root: typer.Typer, name: str, help_text: str) -> None:
    """List ``name`` with its help without importing its module."""

    def run(ctx: typer.Context) -> None:
        # main() mounts the real command whenever its name comes first, so this runs only if a
        # caller invokes the listing itself: hand the arguments to the mounted command.
        build_app(name)(args=[name, *ctx.args], prog_name=ctx.find_root().info_name)

    run.__doc__ = help_text
    root.command(name, help=help_text, context_settings=_ANY_ARGS)(run)


def build_listing() -> typer.Typer:
    """The root command with every command listed, none mounted: what ``edgeway --help`` shows."""
    root = _bare_root()
    for name, _, help_text, extra in _SUBCOMMANDS:
        absent = missing(extra) if extra is not None else None
        if extra is not None and absent is not None:
            _needs_extra(root, name, help_text, MissingExtraError(f"`edgeway {name}`", extra, absent))
        else:
            _listed(root, name, help_text)
    return root


def _completing() -> bool:
    # Shell completion (click's _EDGEWAY_COMPLETE, typer's _TYPER_COMPLETE_ARGS) completes the
    # options of any command, so it needs the whole tree.
    return any(key.startswith("_") and "_COMPLETE" in key for key in os.environ)


def __getattr__(name: str) -> Any:
    # `app` is built on first use so that importing this module (as `main` does) mounts nothing.
    if name == "app":
        tree = build_app()
        globals()["app"] = tree
        return tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    first = sys.argv[1] if len(sys.argv) > 1 else None
    known = {name for name, _, _, _ in _SUBCOMMANDS}
    try:
        if first in known:
            tree = build_app(first)
        elif _completing():
            tree = build_app()
        else:
            tree = build_listing()
        tree()
    except ModuleNotFoundError as exc:
        # A command that reaches a feature whose extra is missing (a broker URL, a store) says
        # which extra to install instead of ending in a traceback.
        if isinstance(exc, MissingExtraError):
            _fail(str(exc))
        needed = extra_for_module(exc.name)
        if needed is None:
            raise
        _fail(f"{exc.name} is not installed: pip install 'edgeway[{needed}]'")


if __name__ == "__main__":
    main()
