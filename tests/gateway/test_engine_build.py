"""Which engine a test run exercises: the mypyc-compiled build or the interpreted sources.

``./dev test-compiled`` runs the suite with the compiled build first on PYTHONPATH and sets
EDGEWAY_EXPECT_COMPILED=1; without this check a build that silently fell back to the ``.py``
files would pass every test while testing nothing compiled.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from edgeway.build import engine_build

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    paths = config["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["compile"]
    return [p.removeprefix("src/").removesuffix(".py").replace("/", ".") for p in paths]


def test_every_module_listed_for_compiling_exists() -> None:
    for name in compiled_modules():
        assert importlib.util.find_spec(name) is not None, name


def test_the_run_exercises_the_engine_it_claims() -> None:
    # Interpreted runs guard the other way: a stray extension module in src/ would shadow the
    # source a developer edits.
    expected = "compiled" if os.environ.get("EDGEWAY_EXPECT_COMPILED") == "1" else "interpreted"
    assert engine_build() == expected
    kinds = {
        name: "compiled" if str(importlib.util.find_spec(name).origin).endswith(".so") else "interpreted"  # type: ignore[union-attr]
        for name in compiled_modules()
    }
    assert {name for name, kind in kinds.items() if kind != expected} == set()


def test_version_names_the_engine_build() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from edgeway.cli import main; main()", "version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = "compiled" if os.environ.get("EDGEWAY_EXPECT_COMPILED") == "1" else "interpreted"
    assert out.endswith(f"({expected})")
