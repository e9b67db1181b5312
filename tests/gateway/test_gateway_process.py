"""`edgeway gateway` as a real process: workers sharing the port, admin port, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway_helpers import backend, read_request

from conftest import reserved_ports


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} did not open")


async def _request(port: int, path: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    out = await asyncio.wait_for(r.read(), 10)
    w.close()
    return out


async def test_workers_share_the_port_and_sigterm_drains_in_flight(tmp_path: Path) -> None:
    pids: set[bytes] = set()

    async def slow_backend(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line, _headers, _ = await read_request(r)
        if b"/slow" in line:
            await asyncio.sleep(1.0)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        w.close()

    with reserved_ports(2) as (port, admin):
        async with backend(slow_backend) as bport:
            cfg = tmp_path / "gw.yaml"
            cfg.write_text(
                f"name: proc-gw\nlisten: {{port: {port}}}\nadmin: {{port: {admin}}}\n"
                f"services:\n  b: {{instances: ['http://127.0.0.1:{bport}']}}\n"
                "routes:\n  - match: {path: '/**'}\n    proxy: {service: b}\n"
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg), "--workers", "2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                await asyncio.to_thread(_wait_port, port)
                await asyncio.to_thread(_wait_port, admin)
                results = await asyncio.gather(*(_request(port, b"/x") for _ in range(20)))
                assert all(r.startswith(b"HTTP/1.1 200") for r in results), [
                    r.split(b"\r\n\r\n")[-1] for r in results if not r.startswith(b"HTTP/1.1 200")
                ]
                ready = await _request(admin, b"/readyz")
                assert ready.startswith(b"HTTP/1.1 200")
                slow = asyncio.create_task(_request(port, b"/slow"))
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                out = await slow
                code = await asyncio.to_thread(proc.wait, 15)
            finally:
                if proc.poll() is None:
                    proc.kill()
            logs = proc.stdout.read() if proc.stdout else b""
        assert out.startswith(b"HTTP/1.1 200"), out
        assert out.endswith(b"ok")
        assert code == 0
        lines = [json.loads(x) for x in logs.splitlines() if x.startswith(b"{")]
        for line in lines:
            if line["message"] == "gateway listening":
                pids.add(str(line["pid"]).encode())
        assert len(pids) == 2, "two worker processes"
        assert sum(1 for x in lines if x["message"] == "gateway stopped") == 2
        assert all(x["status"] == 200 for x in lines if x["message"] == "request")


def test_invalid_config_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "services:\n  b: {instances: ['http://127.0.0.1:1']}\nroutes:\n  - match: {path: '/x'}\n"
        "    proxy: {service: nope}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert res.returncode == 2
    assert "bad.yaml:5" in res.stderr
    assert "routes[0].proxy.service" in res.stderr


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_the_supervisor_of_several_workers_loads_no_gateway_code(tmp_path: Path) -> None:
    """The parent of `--workers 2` only forwards signals: it must not hold the gateway, pydantic
    and the CLI in memory (it did: 46 MB, where nginx's master takes a few)."""
    with reserved_ports(1) as (port,):
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(
            f"name: small-parent\nlisten: {{port: {port}}}\nadmin: null\n"
            "services:\n  b: {instances: ['http://127.0.0.1:9']}\n"
            "routes:\n  - match: {path: '/**'}\n    proxy: {service: b}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert proc.stdout is not None
            listening = 0
            while listening < 2:
                line = proc.stdout.readline()
                assert line, "the gateway exited before both workers listened"
                listening += b'"gateway listening"' in line
            maps, rss_kb = _maps(proc.pid), _rss_kb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # The pid a service manager started is still the parent, and it maps none of the native
    # modules a worker needs.
    for library in ("pydantic_core", "uvloop", "httptools", "_yaml"):
        assert library not in maps, f"the supervisor loaded {library}"
    assert rss_kb < 30_000, f"the supervisor holds {rss_kb} kB"


def test_port_0_with_several_workers_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "listen: {port: 0}\nadmin: null\nservices:\n  b: {instances: ['http://127.0.0.1:9']}\n"
        "routes:\n  - match: {path: '/**'}\n    proxy: {service: b}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "listen.port: port 0 (a free port) needs one worker, not 2" in res.stderr


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie of ours does not count: it no longer serves)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL on the supervisor forwards nothing: its workers kept serving the port as orphans
    (nine of them were found once). They must notice and drain away on their own."""
    import socket

    with reserved_ports(1) as (port,):
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(
            f"name: orphans\nlisten: {{port: {port}}}\nadmin: null\n"
            "limits: {shutdown_grace: 1s}\n"
            "services:\n  b: {instances: ['http://127.0.0.1:9']}\n"
            "routes:\n  - match: {path: '/**'}\n    proxy: {service: b}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        workers: list[int] = []
        try:
            assert proc.stdout is not None
            while len(workers) < 2:
                line = proc.stdout.readline()
                assert line, "the gateway exited before both workers listened"
                if b'"gateway listening"' in line:
                    workers.append(int(json.loads(line)["pid"]))
            _wait_port(port)
            proc.kill()  # SIGKILL: no signal reaches the workers through the supervisor
            proc.wait()
            end = time.monotonic() + 5.0
            while any(_alive(pid) for pid in workers) and time.monotonic() < end:
                time.sleep(0.05)
            left = [pid for pid in workers if _alive(pid)]
            assert not left, f"workers {left} outlived their supervisor"
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts"
        finally:
            for pid in workers:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_the_portable_parent_poll_stops_an_orphan() -> None:
    """Where prctl is missing (macOS) the getppid() poll is the guard: it must set the stop
    event once the parent pid is no longer this process's parent."""
    from edgeway.gateway.process.parent_watch import parent_alive, watch_parent

    stop = asyncio.Event()
    assert parent_alive(os.getppid())
    guard = asyncio.create_task(watch_parent(os.getppid(), stop, interval=0.01))
    await asyncio.sleep(0.05)
    assert not stop.is_set(), "a living parent must not stop the worker"
    guard.cancel()
    gone = os.getppid() + 1_000_000  # never our parent
    await asyncio.wait_for(watch_parent(gone, stop, interval=0.01), 1.0)
    assert stop.is_set()
