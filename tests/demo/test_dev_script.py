"""``./dev`` installs what the command needs: ``demo`` the ``demo`` extra, every other edgeway
command ``all``, ``test``, ``build`` and ``bench`` the ``dev`` extra (all and the dev tools). It is
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


def _installs(calls: list[str]) -> list[str]:
    return [c.split(" | ")[0] for c in calls if " pip install -q -e" in c]


def test_the_demo_installs_only_what_running_needs_and_tests_add_the_dev_tools(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    stamp = root / ".venv" / ".edgeway-stamp"

    calls = _dev(root, "demo", "--pattern", "direct")
    assert _installs(calls) == ["python -m pip install -q -e .[demo]"]
    assert calls[-1] == "edgeway demo --pattern direct | EDGEWAY_CLI=./dev"
    assert stamp.read_text().split() == [digest, "demo"]

    assert not _installs(_dev(root, "demo", "compare"))  # installed already

    # another edgeway command may need any extra (the security service, a broker): all of them
    calls = _dev(root, "config", "check", "gateway.yaml")
    assert _installs(calls) == ["python -m pip install -q -e .[all]"]
    assert stamp.read_text().split() == [digest, "all"]
    assert not _installs(_dev(root, "demo"))  # all includes the demo

    calls = _dev(root, "bench", "proxy")
    assert _installs(calls) == ["python -m pip install -q -e .[dev]"]
    assert stamp.read_text().split() == [digest, "dev"]
    # the benchmarks run from the checkout, not as an edgeway command
    assert calls[-1] == "python -m bench proxy | EDGEWAY_CLI=./dev"
    # the dev tools serve running too: nothing more to install
    assert not _installs(_dev(root, "demo"))
    assert not _installs(_dev(root, "gateway", "--config", "g.yaml"))


def test_help_installs_nothing(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    done = subprocess.run(["./dev", "help"], cwd=root, check=True, capture_output=True, text=True, timeout=60)
    assert "./dev bench ARGS" in done.stdout
    assert "set -euo" not in done.stdout
    assert not (root / ".venv" / "calls.log").exists()


def test_a_changed_pyproject_keeps_the_dev_tools_of_a_dev_environment(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _dev(root, "bench", "proxy")
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    calls = _dev(root, "demo")
    assert _installs(calls) == ["python -m pip install -q -e .[dev]"]


def test_dev_names_itself_as_typed_for_the_commands_edgeway_prints(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _dev(root, "demo")
    log = root / ".venv" / "calls.log"
    subprocess.run(["bash", "dev", "demo"], cwd=root, check=True, capture_output=True, timeout=60)
    assert log.read_text().splitlines()[-1] == "edgeway demo | EDGEWAY_CLI=./dev"
    subprocess.run(["checkout/dev", "demo"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert log.read_text().splitlines()[-1] == "edgeway demo | EDGEWAY_CLI=checkout/dev"
