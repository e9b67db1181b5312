"""``edgeway <command>`` imports only that command's package (a gateway's memory is its own)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
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
