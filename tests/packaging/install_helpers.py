"""What the install tests share: a clean virtual environment outside the checkout with a wheel
installed, the environment a command runs in there, a backend to proxy to, and a gateway that
is waited for until it answers."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IN_CI


def run(
    *argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    command = [str(arg) for arg in argv]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )


def make_venv(where: Path, requirement: str) -> Path:
    """A new virtual environment at ``where`` with ``requirement`` (a wheel, with extras) installed,
    its dependencies from the configured package index (the pip cache makes that quick).

    The environment gets no pip of its own (ensurepip is the slow part): this interpreter's pip
    installs into it. Without a package index the test skips, under CI it fails.
    """
    made = run(sys.executable, "-m", "venv", "--without-pip", where)
    assert made.returncode == 0, made.stderr
    installed = run(
        sys.executable, "-m", "pip", "--python", where / "bin" / "python", "install", "-q", requirement,
        # Without PYTHONPATH: the compiled run puts the unpacked build (with its dist-info) on it,
        # and pip would find edgeway "already satisfied" there and not install the wheel.
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
             "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    if installed.returncode != 0:
        reason = f"pip could not install {requirement}'s dependencies: {installed.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)  # offline, no package index
    return where


def clean_env(venv: Path) -> dict[str, str]:
    """Nothing from the test environment leaks in: no PYTHONPATH (it would find the checkout's
    sources or the compiled build), the venv's bin first on PATH."""
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


@contextlib.contextmanager
def hello_backend() -> Iterator[int]:
    """A backend on a free port answering ``hello from <path>``; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def proxy_config(port: int, backend: int) -> str:
    """A gateway on ``port`` sending every path to the backend, without an admin port."""
    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        "admin: null\n"
        f"services: {{hello: {{instances: ['http://127.0.0.1:{backend}']}}}}\n"
        "routes: [{match: {path: /**}, proxy: {service: hello}}]\n"
    )


def get_when_up(port: int, path: str, gateway: subprocess.Popen[bytes], log: Path) -> tuple[int, bytes]:
    """GET ``path`` from the gateway on ``port`` once it listens (it fails the test if it exits)."""
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
