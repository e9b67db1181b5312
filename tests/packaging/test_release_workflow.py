"""The release workflow (.github/workflows/wheels.yml) cannot run here (no GitHub runners, no
Docker for the manylinux images), so its essentials are checked from the file: which Pythons and
platforms it builds, that the compile hook is on, that each wheel is tested with the smoke test
tests/packaging/test_compiled_wheel.py runs here, and that publishing needs no stored secret."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "wheels.yml"


def _workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _cibuildwheel_step() -> dict[str, Any]:
    steps = _workflow()["jobs"]["wheels"]["steps"]
    (step,) = [s for s in steps if str(s.get("uses", "")).startswith("pypa/cibuildwheel@")]
    assert isinstance(step, dict)
    return step


def test_it_runs_on_release_tags() -> None:
    # PyYAML reads the key `on` as True (YAML 1.1)
    triggers = _workflow()[True]
    assert triggers["push"]["tags"] == ["v*"]


def test_cibuildwheel_is_pinned_and_builds_cpython_311_to_313_with_the_compile_hook() -> None:
    step = _cibuildwheel_step()
    assert step["uses"].split("@")[1].startswith("v")  # a release tag, not a moving branch
    env = step["env"]
    assert env["CIBW_BUILD"].split() == ["cp311-*", "cp312-*", "cp313-*"]
    assert "HATCH_BUILD_HOOK_ENABLE_CUSTOM=1" in shlex.split(env["CIBW_ENVIRONMENT"])
    # hatch's switch for the hook named `custom`, which is off unless switched on
    hooks = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert hooks["hooks"]["custom"]["enable-by-default"] is False


def test_every_wheel_is_tested_with_the_smoke_test_that_runs_here() -> None:
    command = shlex.split(_cibuildwheel_step()["env"]["CIBW_TEST_COMMAND"])
    assert command[0] == "python"
    assert command[1] == "{project}/scripts/wheel_smoke.py"
    assert (ROOT / "scripts" / "wheel_smoke.py").is_file()
    assert "--any-engine" not in command  # a wheel that fell back to pure Python fails


def test_it_builds_on_linux_and_macos_for_both_architectures() -> None:
    job = _workflow()["jobs"]["wheels"]
    assert job["runs-on"] == "${{ matrix.os }}"
    runners = set(job["strategy"]["matrix"]["os"])
    assert runners == {"ubuntu-24.04", "ubuntu-24.04-arm", "macos-15-intel", "macos-15"}
    env = _cibuildwheel_step()["env"]
    assert env["CIBW_ARCHS"] == "native"
    # musllinux is built by default; only 32-bit targets are skipped
    assert set(env["CIBW_SKIP"].split()) == {"*-win32", "*_i686"}


def test_publishing_uses_trusted_publishing_after_every_build() -> None:
    publish = _workflow()["jobs"]["publish"]
    assert set(publish["needs"]) == {"wheels", "sdist"}
    assert publish["permissions"] == {"id-token": "write"}
    assert any(str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@") for s in publish["steps"])
    assert "password" not in WORKFLOW.read_text()
