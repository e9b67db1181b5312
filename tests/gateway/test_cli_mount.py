"""``edgeway <command>`` imports only that command's package (a gateway's memory is its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys

import pytest
from edgeway.cli import build_app
build_app({only!r})
heavy = sorted(m for m in ({mods}) if m in sys.modules)
print(",".join(heavy))
"""

HEAVY = (
    "edgeway.saga.store",
    "edgeway.bus.bus",
    "edgeway.security_service",
    "edgeway.demo.plan",
    "sqlalchemy",
)


def loaded(only: str | None) -> list[str]:
    code = PROBE.format(only=only, mods=", ".join(repr(m) for m in HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_gateway_command_does_not_load_the_other_packages() -> None:
    assert loaded("gateway") == []


def test_the_full_tree_still_mounts_every_command() -> None:
    # The probe is able to fail: the whole tree does import what the gateway must not.
    assert "edgeway.saga.store" in loaded(None)


def test_lazy_app_attribute_has_every_command() -> None:
    from edgeway import cli

    names = {group.name for group in cli.app.registered_groups}
    assert {"gateway", "config", "security", "bus", "saga", "demo"} <= names


def test_every_listed_command_is_mounted() -> None:
    # With every extra installed (the dev environment), no command is left out of the tree.
    from edgeway import cli

    names = {group.name for group in cli.build_app().registered_groups}
    assert names == {name for name, _, _, _ in cli._SUBCOMMANDS}


def test_a_command_module_without_an_app_is_an_error_not_a_silent_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeway import cli

    # edgeway.tasks imports fine and has no `app`: the command must not quietly disappear.
    monkeypatch.setattr(cli, "_SUBCOMMANDS", [("broken", "edgeway.tasks", "A broken command.", None)])
    with pytest.raises(cli.CommandMountError, match=r"`edgeway broken`: edgeway.tasks has no typer.Typer"):
        cli.build_app()
