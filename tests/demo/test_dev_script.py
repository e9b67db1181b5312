"""``./dev`` installs what the command needs: running (``demo`` and every edgeway command) gets the
project's runtime dependencies only; ``test``, ``build`` and ``bench`` add the ``dev`` extra. It is
run on a copy of the script with a recording stand-in for ``.venv`` (no real install)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stands in for .venv/bin/python and .venv/bin/edgeway: records its arguments (and, for
# edgeway, the EDGEWAY_CLI it was given); `python -c` prints a path without Python.h.
RECORDER = """#!/bin/sh
echo "$(basename "$0") $* | EDGEWAY_CLI=${EDGEWAY_CLI:-}" >> "$(dirname "$0")/../calls.log"
case "$1" in -c) echo /nonexistent ;; esac
exit 0
"""


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "dev", root / "dev")
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    for name in ("python", "edgeway"):
        tool = root / ".venv" / "bin" / name
        tool.write_text(RECORDER)
        tool.chmod(0o755)
    return root


def _dev(root: Path, *args: str) -> list[str]:
    log = root / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run(["./dev", *args], cwd=root, check=True, capture_output=True, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


def test_the_demo_installs_only_what_running_needs_and_tests_add_the_dev_tools(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    stamp = root / ".venv" / ".edgeway-stamp"

    calls = _dev(root, "demo", "--pattern", "direct")
    installs = [c for c in calls if " pip install -q -e" in c]
    assert [c.split(" | ")[0] for c in installs] == ["python -m pip install -q -e ."]
    assert calls[-1] == "edgeway demo --pattern direct | EDGEWAY_CLI=./dev"
    assert stamp.read_text().split() == [digest, "run"]

    assert not [c for c in _dev(root, "demo", "compare") if "pip install" in c]  # installed already

    calls = _dev(root, "bench", "proxy")
    assert "python -m pip install -q -e .[dev] | EDGEWAY_CLI=./dev" in calls
    assert stamp.read_text().split() == [digest, "dev"]
    # the dev tools serve running too: nothing more to install
    assert not [c for c in _dev(root, "demo") if "pip install" in c]


def test_a_changed_pyproject_keeps_the_dev_tools_of_a_dev_environment(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _dev(root, "bench", "proxy")
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    calls = _dev(root, "demo")
    assert any(c.startswith("python -m pip install -q -e .[dev]") for c in calls)


def test_dev_names_itself_as_typed_for_the_commands_edgeway_prints(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _dev(root, "demo")
    log = root / ".venv" / "calls.log"
    subprocess.run(["bash", "dev", "demo"], cwd=root, check=True, capture_output=True, timeout=60)
    assert log.read_text().splitlines()[-1] == "edgeway demo | EDGEWAY_CLI=./dev"
    subprocess.run(["checkout/dev", "demo"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert log.read_text().splitlines()[-1] == "edgeway demo | EDGEWAY_CLI=checkout/dev"
