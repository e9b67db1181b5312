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

import http.client
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IN_CI, held_ports

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


def _run(
    *argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=300, check=False, env=env, cwd=cwd
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean environment with ``edgeway[gateway]`` from a wheel of this checkout."""
    where = tmp_path_factory.mktemp("gateway-install")
    built = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
        "-w", where / "wheel", ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (where / "wheel").glob("edgeway-*.whl")
    env = where / "venv"
    # without pip of its own (ensurepip is the slow part); this pip installs into it
    made = _run(sys.executable, "-m", "venv", "--without-pip", env)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[gateway]",
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    if installed.returncode != 0:
        reason = f"pip could not install the gateway's dependencies: {installed.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)  # offline, no package index
    return env


def _clean_env(venv: Path) -> dict[str, str]:
    # Nothing from the test environment leaks in: no PYTHONPATH (it would find the checkout's
    # sources or the compiled build), the venv's bin first on PATH.
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "COLUMNS": "200"}


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_the_gateway_install_leaves_out_the_service_stack(venv: Path) -> None:
    done = _run(venv / "bin" / "python", "-c", FIND, *EXCLUDED, "edgeway", "uvloop", env=_clean_env(venv))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "edgeway,uvloop"


def test_the_gateway_install_checks_a_config_and_proxies_a_request(
    venv: Path, backend: int, tmp_path: Path
) -> None:
    [port] = held_ports(1)  # the gateway binds it with SO_REUSEPORT
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        "admin: null\n"
        f"services: {{hello: {{instances: ['http://127.0.0.1:{backend}']}}}}\n"
        "routes: [{match: {path: /**}, proxy: {service: hello}}]\n"
    )
    env = _clean_env(venv)
    edgeway = venv / "bin" / "edgeway"
    checked = _run(edgeway, "config", "check", config, env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == f"ok: {config} (1 route, 1 service)"

    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        gateway = subprocess.Popen(
            [str(edgeway), "gateway", "--config", str(config)], stdout=out, stderr=out, env=env, cwd=tmp_path
        )
        try:
            status, body = _get_when_up(port, "/greet", gateway, log)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
    assert (status, body) == (200, b"hello from /greet")
    assert gateway.returncode == 0, log.read_text()


def test_a_command_whose_extra_is_missing_says_which_to_install(venv: Path, tmp_path: Path) -> None:
    edgeway = venv / "bin" / "edgeway"
    listed = _run(edgeway, "--help", env=_clean_env(venv), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Needs the 'security' extra, not installed." in listed.stdout
    done = _run(edgeway, "security", "serve", env=_clean_env(venv), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "edgeway: `edgeway security` needs the 'security' extra (fastapi is not installed): "
        "pip install 'edgeway[security]'"
    )


def _get_when_up(port: int, path: str, gateway: subprocess.Popen[bytes], log: Path) -> tuple[int, bytes]:
    deadline = time.monotonic() + 30
    while True:
        if gateway.poll() is not None:
            pytest.fail(f"edgeway gateway exited {gateway.returncode}:\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                pytest.fail(f"edgeway gateway did not open port {port}:\n{log.read_text()}")
            time.sleep(0.1)
