"""Smoke test of an installed edgeway wheel: the compiled engine serves a request.

Run by cibuildwheel after each wheel is built (.github/workflows/wheels.yml, ``test-command``)
and by tests/packaging/test_compiled_wheel.py in a clean virtual environment here. It needs only
the standard library and the installed edgeway: it starts a backend on a free port, runs
``edgeway gateway`` (this interpreter's) in front of it on a free port, sends one request
through, and prints one JSON line: the answer and the engine the gateway reported at start.
Exit 1 when the answer is wrong or the engine is not the compiled one (``--any-engine`` accepts
the interpreted engine, for a pure-Python wheel).
"""

from __future__ import annotations

import http.client
import http.server
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EDGEWAY = [sys.executable, "-c", "from edgeway.cli import main; main()"]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _listening(process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The gateway's ``gateway listening`` line: the port it took (port 0) and its engine."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("message") == "gateway listening":
                return dict(json.loads(line))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"wheel smoke: edgeway gateway did not start:\n{log.read_text()}")


def main() -> int:
    any_engine = "--any-engine" in sys.argv[1:]
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="edgeway-wheel-smoke-") as where:
        config, log = Path(where) / "gateway.yaml", Path(where) / "gateway.log"
        config.write_text(
            "listen: {host: 127.0.0.1, port: 0}\n"
            "admin: null\n"
            f"services: {{hello: {{instances: ['http://127.0.0.1:{backend.server_address[1]}']}}}}\n"
            "routes: [{match: {path: /**}, proxy: {service: hello}}]\n"
        )
        with log.open("wb") as out:
            gateway = subprocess.Popen(
                [*EDGEWAY, "gateway", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=where,
            )
        try:
            started = _listening(gateway, log)
            host, port = str(started["listen"]).rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/smoke")
            response = conn.getresponse()
            result = {
                "status": response.status,
                "body": response.read().decode(),
                "engine": started["engine"],
            }
            conn.close()
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            backend.shutdown()
        print(json.dumps(result))
        ok = result["status"] == 200 and result["body"] == "hello from /smoke" and gateway.returncode == 0
        if not ok or (result["engine"] != "compiled" and not any_engine):
            print(
                f"wheel smoke: FAILED (gateway exit {gateway.returncode}):\n{log.read_text()}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
