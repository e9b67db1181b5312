"""A gateway-only install: ``pip install 'edgeway[gateway]'`` into a clean virtual environment.

The wheel is built from this checkout and installed with its dependencies from the package index
(the pip cache makes that quick after the first run); the environment must not hold FastAPI,
SQLAlchemy, asyncpg, aio-pika or the OpenTelemetry SDK, and ``edgeway config check`` and
``edgeway gateway`` must work in it: a request through the gateway reaches a backend and comes
back 200. A command whose extra is missing says which one to install.

Slow (a venv and an install, ~30 s), so it runs once: not again in the compiled run, which
tests the same sources.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from install_helpers import clean_env, get_when_up, hello_backend, make_venv, proxy_config, run

from conftest import held_ports

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("gateway-install"),  # one worker builds the environment once
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.environ.get("EDGEWAY_EXPECT_COMPILED") == "1",
        reason="packaging is tested once, in the run on the sources",
    ),
]

# What a gateway-only install must not contain (the import names).
EXCLUDED = ("fastapi", "sqlalchemy", "asyncpg", "aio_pika", "opentelemetry.sdk", "uvicorn", "argon2")

FIND = """
import importlib.util, sys
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
print(",".join(name for name in sys.argv[1:] if found(name)))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean environment with ``edgeway[gateway]`` from a wheel of this checkout."""
    where = tmp_path_factory.mktemp("gateway-install")
    built = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
        "-w", where / "wheel", ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (where / "wheel").glob("edgeway-*.whl")
    return make_venv(where / "venv", f"{wheel}[gateway]")


@pytest.fixture
def backend() -> Iterator[int]:
    with hello_backend() as port:
        yield port


def test_the_gateway_install_leaves_out_the_service_stack(venv: Path) -> None:
    done = run(venv / "bin" / "python", "-c", FIND, *EXCLUDED, "edgeway", "uvloop", env=clean_env(venv))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "edgeway,uvloop"


def test_the_gateway_install_checks_a_config_and_proxies_a_request(
    venv: Path, backend: int, tmp_path: Path
) -> None:
    [port] = held_ports(1)  # the gateway binds it with SO_REUSEPORT
    config = tmp_path / "gateway.yaml"
    config.write_text(proxy_config(port, backend))
    env = clean_env(venv)
    edgeway = venv / "bin" / "edgeway"
    checked = run(edgeway, "config", "check", config, env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == f"ok: {config} (1 route, 1 service)"

    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        gateway = subprocess.Popen(
            [str(edgeway), "gateway", "--config", str(config)], stdout=out, stderr=out, env=env, cwd=tmp_path
        )
        try:
            status, body = get_when_up(port, "/greet", gateway, log)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
    assert (status, body) == (200, b"hello from /greet")
    assert gateway.returncode == 0, log.read_text()


def test_a_command_whose_extra_is_missing_says_which_to_install(venv: Path, tmp_path: Path) -> None:
    edgeway = venv / "bin" / "edgeway"
    listed = run(edgeway, "--help", env=clean_env(venv), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Needs the 'security' extra, not installed." in listed.stdout
    assert "Needs the 'scaffold' extra, not installed." in listed.stdout  # edgeway new
    done = run(edgeway, "security", "serve", env=clean_env(venv), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "edgeway: `edgeway security` needs the 'security' extra (fastapi is not installed): "
        "pip install 'edgeway[security]'"
    )
