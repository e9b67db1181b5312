"""Imports point downward: each package of ``src/edgeway`` may import only the packages
docs/architecture.md allows it. Read from the source (every ``import``, also those inside
functions), so a lazy import cannot hide a wrong direction."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "edgeway"

# Leaf modules anyone may use.
LEAVES = {"edgeway", "tasks", "extras", "build", "process_tuning"}

# package -> the packages it may import (besides itself and LEAVES). The order is the layering.
ALLOWED: dict[str, set[str]] = {
    "observability": set(),
    "http": set(),
    "pki": set(),
    "resilience": {"http", "observability"},
    "bus": {"observability"},
    "discovery": {"bus", "observability"},
    "security": {"bus", "observability"},
    "saga": {"bus", "observability"},
    "service": {"bus", "discovery", "http", "observability", "pki", "resilience", "security"},
    "security_service": {"bus", "observability", "security", "service"},
    "gateway": {"bus", "discovery", "http", "observability", "pki", "resilience", "security"},
    "bff": {"gateway", "observability"},
    "system": {"gateway"},
    "deploy": {"gateway", "security", "system"},
    "demo": {
        "bff",
        "bus",
        "discovery",
        "gateway",
        "observability",
        "pki",
        "resilience",
        "saga",
        "security",
        "security_service",
        "service",
        "system",
    },
    # renders templates, writes the system file (checked with the system loader) and the edges'
    # includes (checked with the gateway loader), copies deploy's image recipe
    "scaffold": {"deploy", "gateway", "system"},
    "cli": set(),  # commands are imported by name when run (see cli.COMMANDS)
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgeway"


def _is_module(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").is_file()


def _imports() -> dict[str, set[tuple[str, str]]]:
    """package -> {(importing file, imported package)} for every import of another package."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "edgeway":
                    # ``from edgeway import x``: a module, or a name of the package (__version__).
                    targets = [f"edgeway.{a.name}" for a in node.names if _is_module(a.name)]
                elif node.module.startswith("edgeway."):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("edgeway.")]
            for target in targets:
                package = _package(target)
                if package != own and package not in LEAVES:
                    found[own].add((str(rel), package))
    return found


def test_every_package_imports_only_what_the_architecture_allows() -> None:
    wrong = sorted(
        f"{file} imports edgeway.{package}"
        for own, edges in _imports().items()
        for file, package in edges
        if own in ALLOWED and package not in ALLOWED[own]
    )
    assert wrong == [], "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_every_package_is_placed_in_the_architecture() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__"}
    assert packages | modules <= set(ALLOWED) | LEAVES | {"py"}, (packages | modules) - set(ALLOWED) - LEAVES


def test_the_engine_imports_nothing_of_edgeway() -> None:
    # The rule the whole design rests on: http/ can be read, tested and compiled on its own.
    assert not _imports().get("http")
