"""``edgeway security serve`` as a process logs like every edgeway process: JSON lines on stdout
in the one schema (uvicorn's own lines included), and peers polling its feeds write nothing at
the default level, while a request that is not a poll is access-logged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from .conftest import SEED

KEYS = ["time", "level", "service", "request_id", "trace_id", "span_id", "message"]
POLL_SECONDS = 2.0


def _started(process: subprocess.Popen[bytes], lines: list[bytes]) -> int:
    """Read stdout up to uvicorn's 'running on' line; the port it reports (bound as port 0)."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        message = str(orjson.loads(line).get("message", ""))
        if message.startswith("Uvicorn running on"):
            return int(message.split("127.0.0.1:", 1)[1].split()[0])
    raise AssertionError(f"the security service did not start: {b''.join(lines).decode()}")


def test_the_security_service_logs_json_lines_and_nothing_per_poll(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "EDGEWAY_SECURITY_ARGON2_TIME_COST": "1",
        "EDGEWAY_SECURITY_ARGON2_MEMORY_COST": "8",
        "EDGEWAY_SECURITY_ARGON2_PARALLELISM": "1",
    }
    command = [
        sys.executable,
        "-m",
        "edgeway.cli",
        "security",
        "serve",
        "--port",
        "0",
        "--db",
        f"sqlite+aiosqlite:///{tmp_path / 'security.db'}",
        "--keys",
        str(tmp_path / "keys.json"),
        "--seed",
        str(seed),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[bytes] = []
    try:
        port = _started(process, lines)
        base = f"http://127.0.0.1:{port}"
        polls = 0
        with httpx.Client(base_url=base) as http:
            # what gateways and services do, each every second or few
            token = http.post(
                "/oauth/token",
                data={
                    "grant_type": "password",
                    "username": "alice",
                    "password": "alice-password",
                    "client_id": "web",
                },
            )
            assert token.status_code == 200, token.text
            deadline = time.monotonic() + POLL_SECONDS
            while time.monotonic() < deadline:
                for path in ("/.well-known/jwks.json", "/revocations?since=0", "/health/ready"):
                    assert http.get(path).status_code == 200, path
                    polls += 1
                time.sleep(0.05)
            # a request that is not a poll, after the polls: its access line must appear
            refused = http.post("/oauth/token", data={"grant_type": "password", "client_id": "web"})
            assert refused.status_code >= 400
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    lines += out.splitlines(keepends=True)

    assert polls > 20
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert list(entry)[:7] == KEYS, entry
        assert entry["service"] == "security"
        assert entry["level"] in ("debug", "info", "warning", "error", "critical")
    messages = [str(e["message"]) for e in entries]
    assert any(m.startswith("security service up") for m in messages)
    access = [e for e in entries if e.get("kind") == "access"]
    assert [(e["method"], e["path"]) for e in access] == [("POST", "/oauth/token")] * 2, access
    # Between the first token and the refused one the service polled for seconds: not a line.
    first, second = (i for i, m in enumerate(messages) if m.startswith("POST /oauth/token"))
    assert second == first + 1, messages[first : second + 1]
    assert access[1]["request_id"] is not None
    assert access[1]["status"] >= 400
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status says why
    assert process.returncode in (0, -signal.SIGTERM), err.decode()
    assert err == b"", err.decode()  # nothing in plain text on stderr either
