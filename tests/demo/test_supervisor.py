"""The demo's supervisor with small real processes: order, readiness, restarts, failures, stop."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path

from rich.console import Console

from conftest import dead_port, held_ports
from edgeway.demo.plan import FileReady, HttpReady, ProcessSpec, TcpReady
from edgeway.demo.supervisor import Supervisor

# A tiny HTTP server that writes "<name> <time>" to a log when it starts, and exits on its own
# after `die_after` seconds while the marker file exists (removing it, so it dies only once).
SERVER = r"""
import http.server, os, sys, threading, time
port, name, log, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
die_after = float(sys.argv[5])
with open(log, "a") as f:
    f.write(f"{name} {time.monotonic()}\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        print('{"level": "info", "message": "GET %s"}' % self.path, flush=True)
http.server.HTTPServer.allow_reuse_port = True  # the test holds the port with SO_REUSEPORT
server = http.server.HTTPServer(("127.0.0.1", port), H)
if die_after and os.path.exists(marker):
    def die():
        time.sleep(die_after); os.remove(marker); os._exit(3)
    threading.Thread(target=die, daemon=True).start()
print(f"{name} serving", flush=True)
server.serve_forever()
"""


def _spec(
    tmp: Path, name: str, *, after: tuple[str, ...] = (), die_after: float = 0.0
) -> tuple[ProcessSpec, int]:
    # Told in advance (the supervisor checks it for readiness; a restart binds it again): held.
    [port] = held_ports(1)
    script = tmp / "server.py"
    script.write_text(SERVER)
    marker = tmp / f"{name}.die"
    if die_after:
        marker.write_text("x")
    argv = (
        sys.executable,
        str(script),
        str(port),
        name,
        str(tmp / "starts.log"),
        str(marker),
        str(die_after),
    )
    return ProcessSpec(
        name, argv, {"PATH": "/usr/bin:/bin"}, HttpReady(f"http://127.0.0.1:{port}/"), after=after
    ), port


def _supervisor(specs: list[ProcessSpec], **kwargs: object) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    return Supervisor(specs, console=console, **kwargs), out  # type: ignore[arg-type]


async def test_processes_start_after_their_dependencies_are_ready_and_stop_cleanly(tmp_path: Path) -> None:
    a, _ = _spec(tmp_path, "alpha")
    b, _ = _spec(tmp_path, "beta", after=("alpha",))
    supervisor, _out = _supervisor([b, a])
    stop = asyncio.Event()
    ready_at: list[float] = []
    task = asyncio.create_task(supervisor.run(stop, lambda: ready_at.append(time.monotonic())))
    async with asyncio.timeout(30):
        while not ready_at:
            await asyncio.sleep(0.05)
    starts = dict(line.split() for line in (tmp_path / "starts.log").read_text().splitlines())
    assert float(starts["alpha"]) < float(starts["beta"])
    pids = [supervisor.pid("alpha"), supervisor.pid("beta")]
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert all(supervisor.pid(name) is None for name in ("alpha", "beta"))
    for pid in pids:
        assert pid is not None
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


async def test_a_process_that_dies_is_restarted_and_the_log_says_so(tmp_path: Path) -> None:
    flaky, _ = _spec(tmp_path, "flaky", die_after=0.5)
    supervisor, out = _supervisor([flaky])
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop, lambda: None))
    try:
        async with asyncio.timeout(30):
            while "flaky is ready again (restart #1)" not in out.getvalue():
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    text = out.getvalue()
    assert "flaky exited with code 3; restarting in 0.5 s (restart #1)" in text
    assert len((tmp_path / "starts.log").read_text().splitlines()) == 2


async def test_a_process_that_exits_before_it_is_ready_fails_the_start_and_shows_its_output(
    tmp_path: Path,
) -> None:
    broken = ProcessSpec(
        "broken",
        (sys.executable, "-c", "print('cannot open the database: disk full'); raise SystemExit(2)"),
        {"PATH": "/usr/bin:/bin"},
        TcpReady("127.0.0.1", dead_port()),
    )
    waiting = ProcessSpec(
        "waiting",
        (sys.executable, "-c", "import time; time.sleep(60)"),
        {},
        FileReady(tmp_path / "x"),
        after=("broken",),
    )
    supervisor, out = _supervisor([broken, waiting])
    code = await asyncio.wait_for(supervisor.run(asyncio.Event(), lambda: None), 30)
    assert code == 1
    text = out.getvalue()
    assert "start-up failed: broken exited with code 2 before it was ready" in text
    assert "cannot open the database: disk full" in text
    assert supervisor.procs["waiting"].process is None  # never started: what it needs failed


def test_log_lines_are_rendered_for_a_terminal() -> None:
    from edgeway.demo.logview import render_line

    access = '{"time":"2026-11-21T20:33:19.123Z","level":"info","service":"orders","request_id":"ca217b4d99",'
    access += '"message":"POST /orders 202","logger":"edgeway.access","kind":"access","duration_ms":27.84}'
    text = render_line("orders", "cyan", 9, access)
    assert text is not None
    assert text.plain == "orders    │ 20:33:19 POST /orders 202 27.8ms req=ca217b4d"
    assert render_line("orders", "cyan", 9, access, show_access=False) is None
    warning = '{"time":"2026-11-21T20:33:20.000Z","level":"warning","message":"step failed","saga_id":"s1"}'
    rendered = render_line("orders", "cyan", 9, warning)
    assert rendered is not None
    assert rendered.plain.endswith("WARNING step failed saga_id=s1")
    chatty = '{"level":"info","message":"HTTP Request: GET /revocations","logger":"httpx"}'
    assert render_line("gateway", "cyan", 9, chatty) is None
    ready = render_line("nats", "cyan", 9, "[123] [INF] Server is ready")
    assert ready is not None
    assert ready.plain == "nats      │ [123] [INF] Server is ready"
