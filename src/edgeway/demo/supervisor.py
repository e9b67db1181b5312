"""Run a set of processes like a tiny orchestrator: start in dependency order, wait for readiness,
merge their logs, restart crashes with backoff, stop everything cleanly.

Each process runs in its own session (process group), so a Ctrl-C in the terminal reaches only
the supervisor, which then stops the processes in an order that drains traffic first: the edges,
then the services, then the security service, then the broker — each group with SIGTERM and a
grace period, SIGKILL for what is left.

A process that exits while the system runs is restarted after ``min(30, 0.5 · 2^n)`` seconds,
where ``n`` counts its recent restarts (reset once it has stayed up for a minute), and the
supervisor says so in the log stream. Readiness is an HTTP 200 from the process's readiness URL
(an open TCP port for the broker, a file for the strangler controller), polled until ``startup_timeout``.

On a terminal the start-up is a live table; when the output is not a terminal (a pipe, a file, CI)
a live display would print nothing until the end, so each change of a process's state is printed
as a plain line instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from edgeway.demo.logview import COLORS, render_line
from edgeway.demo.plan import FileReady, HttpReady, ProcessSpec, TcpReady
from edgeway.tasks import cancel_and_wait

__all__ = ["StartupFailed", "Supervisor"]

State = Literal["waiting", "starting", "ready", "restarting", "failed", "stopped"]
Hook = Callable[[], Awaitable[None]]

_STOP_ORDER = ("edge", "service", "core", "broker")
_STABLE_AFTER = 60.0


class StartupFailed(Exception):
    """A process did not become ready: it exited, or the start-up timeout passed."""


@dataclass(eq=False)
class Supervised:
    spec: ProcessSpec
    color: str
    state: State = "waiting"
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    recent_restarts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    pump: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        console: Console | None = None,
        hooks: Mapping[str, Hook] | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        show_access: bool = True,
        probe_tls: ssl.SSLContext | None = None,
        on_line: Callable[[str, str], None] | None = None,
    ) -> None:
        self.console = console or Console()
        self.on_line = on_line  # every line of every process, as read (the control room's feed)
        self.procs = {s.name: Supervised(s, COLORS[i % len(COLORS)]) for i, s in enumerate(specs)}
        self.hooks = dict(hooks or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.show_access = show_access
        self.width = max(len(name) for name in self.procs)
        self.plain = not self.console.is_terminal
        self.all_ready = False
        self._stop = asyncio.Event()
        self._failure: str | None = None
        self._live: Live | None = None
        # probe_tls: how readiness probes reach HTTPS processes (edgeway demo --tls: the demo's CA
        # and a client certificate, which the services require)
        self._http = httpx.AsyncClient(timeout=2.0, verify=probe_tls if probe_tls is not None else True)
        self.t0 = time.monotonic()

    # -- public ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> int:
        """Start everything, call ``on_ready`` once all are ready, run until ``stop``; 0 on a clean
        stop, 1 when start-up failed."""
        keepers = [asyncio.create_task(self._keep(p), name=f"keep-{p.name}") for p in self.procs.values()]
        try:
            if self.plain:
                self._print(Text(f"edgeway demo: starting {len(self.procs)} processes", style="bold"))
                ok = await self._wait_all_ready(stop)
            else:
                with Live(self._table(), console=self.console, refresh_per_second=8, transient=True) as live:
                    self._live = live
                    ok = await self._wait_all_ready(stop)
                    live.update(self._table())
                self._live = None
            if not ok:
                if self._failure:
                    self._report_failure()
                return 1 if self._failure else 0
            self.all_ready = True
            if on_ready is not None:
                on_ready()
            await stop.wait()
            return 0
        finally:
            self._live = None
            await self.shutdown()
            await cancel_and_wait(*keepers)
            await self._http.aclose()

    async def shutdown(self) -> None:
        """Stop every process: edges, then services, then infrastructure."""
        self._stop.set()
        for role in _STOP_ORDER:
            group = [p for p in self.procs.values() if p.spec.role == role and _alive(p)]
            await asyncio.gather(*(self._terminate(p) for p in group))
        for p in self.procs.values():
            if p.pump is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(p.pump, 2.0)

    def pid(self, name: str) -> int | None:
        process = self.procs[name].process
        return process.pid if process is not None and process.returncode is None else None

    # -- one process -----------------------------------------------------------------------------

    async def _keep(self, p: Supervised) -> None:
        for dep in p.spec.after:
            await self.procs[dep].ready.wait()
        while not self._stop.is_set():
            await self._spawn(p)
            became_ready = await self._wait_ready(p)
            if became_ready and not self._stop.is_set():
                hook = self.hooks.pop(p.name, None)
                if hook is not None:
                    try:
                        await hook()
                    except Exception as exc:
                        self._failure = f"{p.name}: preparing it failed: {type(exc).__name__}: {exc}"
                        self._set_state(p, "failed")
                        return
                p.ready_at = time.monotonic()
                p.ready.set()
                self._set_state(p, "ready")
                if p.restarts and self.all_ready:
                    self._say(f"{p.name} is ready again (restart #{p.restarts})", "bold green")
            assert p.process is not None
            code = await p.process.wait()
            if p.pump is not None:
                with contextlib.suppress(Exception):
                    await p.pump
            if self._stop.is_set():
                p.state = "stopped"
                return
            if not self.all_ready and not became_ready:
                self._failure = f"{p.name} exited with code {code} before it was ready"
                self._set_state(p, "failed")
                return
            if p.ready_at is not None and time.monotonic() - p.ready_at > _STABLE_AFTER:
                p.recent_restarts = 0
            delay = min(30.0, 0.5 * 2**p.recent_restarts)
            p.recent_restarts += 1
            p.restarts += 1
            p.state = "restarting"  # the line below says it, also on a terminal
            p.ready.clear()
            self._say(
                f"{p.name} exited with code {code}; restarting in {delay:.1f} s (restart #{p.restarts})",
                "bold yellow",
            )
            self._refresh()
            await asyncio.sleep(delay)

    async def _spawn(self, p: Supervised) -> None:
        p.started_at = time.monotonic()
        p.ready_at = None
        self._set_state(p, "starting")
        p.process = await asyncio.create_subprocess_exec(
            *p.spec.argv,
            env=dict(p.spec.env),
            cwd=p.spec.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        p.pump = asyncio.create_task(self._pump(p, p.process), name=f"pump-{p.name}")

    async def _pump(self, p: Supervised, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line longer than the buffer
                raw = await process.stdout.read(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\n")
            p.tail.append(line)
            if self.on_line is not None:
                self.on_line(p.name, line)
            if not self.all_ready and not _important(line):
                continue  # start-up chatter stays out of the progress display
            rendered = render_line(p.name, p.color, self.width, line, show_access=self.show_access)
            if rendered is not None:
                self._print(rendered)

    async def _wait_ready(self, p: Supervised) -> bool:
        assert p.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if p.process.returncode is not None or self._stop.is_set():
                return False
            if await self._probe(p.spec.ready):
                return True
            await asyncio.sleep(0.2)
        self._failure = f"{p.name} was not ready within {self.startup_timeout:g} s"
        self._set_state(p, "failed")
        return False

    async def _probe(self, check: HttpReady | TcpReady | FileReady) -> bool:
        if isinstance(check, TcpReady):
            return await asyncio.to_thread(_tcp_open, check.host, check.port)
        if isinstance(check, FileReady):
            return check.path.exists()
        try:
            response = await self._http.get(check.url)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _terminate(self, p: Supervised) -> None:
        process = p.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            self._say(f"{p.name} did not stop within {self.stop_timeout:g} s; killing it", "bold red")
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    # -- start-up --------------------------------------------------------------------------------

    async def _wait_all_ready(self, stop: asyncio.Event) -> bool:
        while True:
            if stop.is_set():
                return False
            if self._failure is not None:
                return False
            if all(p.state == "ready" for p in self.procs.values()):
                return True
            self._refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    def _report_failure(self) -> None:
        self.console.print(Text(f"edgeway demo: start-up failed: {self._failure}", style="bold red"))
        for p in self.procs.values():
            if p.state == "failed" and p.tail:
                self.console.print(Text(f"last output of {p.name}:", style="bold"))
                for line in p.tail:
                    rendered = render_line(p.name, p.color, self.width, line)
                    if rendered is not None:
                        self.console.print(rendered)

    # -- output ----------------------------------------------------------------------------------

    def _table(self) -> Group:
        table = Table.grid(padding=(0, 2))
        for p in self.procs.values():
            icon: Spinner | Text
            if p.state == "ready":
                icon = Text("✓", style="bold green")
                detail = Text(
                    f"ready in {p.ready_at - p.started_at:.1f} s" if p.ready_at else "ready", style="green"
                )
            elif p.state == "failed":
                icon, detail = Text("✗", style="bold red"), Text("failed", style="red")
            elif p.state == "waiting":
                deps = ", ".join(d for d in p.spec.after if not self.procs[d].ready.is_set())
                icon, detail = Text("·", style="dim"), Text(f"waiting for {deps}", style="dim")
            else:
                icon, detail = Spinner("dots", style=p.color), Text(p.state, style="yellow")
            table.add_row(icon, Text(p.name, style=p.color), detail)
        ready = sum(p.state == "ready" for p in self.procs.values())
        title = Text(
            f"edgeway demo: starting {len(self.procs)} processes ({ready} ready, "
            f"{time.monotonic() - self.t0:.0f} s)",
            style="bold",
        )
        return Group(title, table)

    def _set_state(self, p: Supervised, state: State) -> None:
        p.state = state
        if self.plain and not self.all_ready:
            # Restarts after start-up are announced by _say, on a terminal too.
            detail = {
                "starting": "starting",
                "ready": f"ready in {(p.ready_at or p.started_at) - p.started_at:.1f} s",
                "failed": "failed",
            }.get(state, state)
            style = {"ready": "green", "failed": "bold red"}.get(state, "")
            self._print(Text(f"{p.name:<{self.width}} │ {detail}", style=style))
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def _print(self, text: Text) -> None:
        (self._live.console if self._live is not None else self.console).print(text, soft_wrap=True)

    def _say(self, message: str, style: str) -> None:
        self._print(Text(f"{'demo':<{self.width}} │ {message}", style=style))


def _alive(p: Supervised) -> bool:
    return p.process is not None and p.process.returncode is None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _tcp_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
    except OSError:
        return False
    return True


def _important(line: str) -> bool:
    lowered = line[:200].lower()
    return any(f'"level":"{level}"' in lowered for level in ("warning", "error", "critical")) or (
        "traceback" in lowered or lowered.startswith(("error", "[err]", "fatal"))
    )
