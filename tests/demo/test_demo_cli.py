"""`edgeway demo` starts a gateway balancing over two sample instances and stops on SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import free_port


def _get(url: str) -> dict[str, object]:
    end = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_demo_balances_two_instances_and_stops_cleanly() -> None:
    gw, admin, b1, b2 = (free_port() for _ in range(4))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeway.cli",
            "demo",
            "--port",
            str(gw),
            "--admin-port",
            str(admin),
            "--backend-ports",
            f"{b1},{b2}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        served = {
            _get(f"http://127.0.0.1:{gw}/catalog/products/1")["served_by"]["instance"] for _ in range(4)
        }  # type: ignore[index]
        routes = _get(f"http://127.0.0.1:{admin}/routes")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(15)
    assert served == {"catalog-1", "catalog-2"}
    assert routes["routes"][0]["id"] == "catalog"  # type: ignore[index]
    assert code == 0


def test_demo_refuses_a_port_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "edgeway.cli", "demo", "--port", str(busy)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode != 0
    assert f"port {busy} is already in use" in res.stderr
