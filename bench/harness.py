"""Processes, ports, memory and the machine: what every benchmark needs around the load generator.

Benchmarks start their targets as child processes (one worker each) and stop them when done, so
a crashed run never leaves a server behind: every child runs in its own session and is killed as
a group.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bench.errors import ProcessFailed, ToolMissing
from edgeway.build import engine_build

REPO_ROOT = Path(__file__).resolve().parent.parent

# How long a server may take to open its port; Python servers import a lot before they listen.
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


# A server started with port 0 binds a free port and names it in a start line on stderr:
# ``listening on HOST:PORT`` (bench.backend.announce: the bench servers) or uvicorn's ``Uvicorn running on
# http://HOST:PORT``. ManagedProcess(port=0) takes the port from that line: nothing can take the
# port between choosing and binding it, which a port found free beforehand cannot promise.
LISTENING = "listening on"
_STARTED = (LISTENING + " ", "running on http://")


# Held for the run: see reserved_port().
_reserved: list[socket.socket] = []


def reserved_port(host: str = "127.0.0.1") -> int:
    """A port for a child that must be told it and binds with SO_REUSEPORT (the gateway; nginx,
    whose listen line says reuseport): held bound, without listening, for the rest of the run,
    so nothing else can take it while the child starts (only listening sockets get connections).
    Everything else binds port 0 (ManagedProcess(port=0), EmbeddedNats(port=0))."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, 0))
    _reserved.append(s)
    return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def require_tool(name: str, hint: str | None = None) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(name, hint or f"apt-get install {name}")
    return path


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; children inherit it.

    Holding 1,000 idle client connections needs 1,000 descriptors here and as many again in the
    target, above the common soft default of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Python children: ``bench`` importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class ManagedProcess:
    """A child server: started in its own session, ready once its port accepts, stopped as a group.

    ``port=0``: the child binds a free port and names it in its start line (see :data:`LISTENING`);
    :attr:`port` is the real one once started.

    stdout goes to ``stdout_path`` or /dev/null (access logs must not fill a pipe nobody reads);
    stderr always goes to a log file so a failure can show why.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_dir: Path,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_path: Path | None = None,
        scheme: str = "http",
    ) -> None:
        self.name = name
        self.scheme = scheme  # of url: "https" for a TLS listener (readiness is still a TCP connect)
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.env = dict(env) if env is not None else python_env()
        self.cwd = cwd or REPO_ROOT
        self.log_path = log_dir / f"{name}.stderr.log"
        self.stdout_path = stdout_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid={self._proc.pid}"
        return f"<ManagedProcess {self.name} {self.host}:{self.port} {state}>"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ProcessFailed(self.name, "not started")
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> ManagedProcess:
        stderr = self.log_path.open("wb")
        stdout: IO[bytes] | int = subprocess.DEVNULL
        self._files.append(stderr)
        if self.stdout_path is not None:
            stdout = self.stdout_path.open("wb")
            self._files.append(stdout)
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_files()
            raise ProcessFailed(self.name, f"cannot start {self.argv[0]}: {exc}") from exc
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise ProcessFailed(self.name, f"exited with status {code} before listening", self.log_tail())
            if self.port == 0:
                self.port = self._started_port()
            if self.port and port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise ProcessFailed(
            self.name, f"did not open {self.host}:{self.port} within {timeout:.0f} s", self.log_tail()
        )

    def _started_port(self) -> int:
        """The port named in the child's start line (stderr, or stdout for a process that logs
        JSON lines there), or 0 before it is written."""
        text = self._output()
        prefixes = "|".join(re.escape(p) for p in _STARTED)
        found = re.search(rf"(?:{prefixes}){re.escape(self.host)}:(\d+)", text)
        return int(found.group(1)) if found else 0

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGTERM first so servers shut down cleanly (nginx removes its pid file, Python
            # flushes); the whole group, because a server may have forked workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._close_files()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._output().splitlines()[-lines:])

    def _output(self) -> str:
        """What the child wrote: stderr, then stdout when it is kept."""
        text = ""
        for path in (self.log_path, self.stdout_path):
            if path is not None:
                with contextlib.suppress(OSError):
                    text += path.read_text(errors="replace")
        return text

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


# --- memory -------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/<pid>/status (VmRSS, in kB there)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ProcessFailed(f"pid {pid}", "has no VmRSS (a kernel thread or a zombie)")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (nginx workers, forked gateway workers)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        task_dir = Path(f"/proc/{current}/task")
        try:
            tasks = list(task_dir.iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                stack.append(int(child))
    return found


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants: the memory a one-worker server really holds."""
    total = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, ProcessFailed):
            total += rss_bytes(p)
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (from /proc/<pid>/stat).

    CPU time per request is the figure that survives a busy machine: throughput drops when other
    work takes the cores, the CPU a server spends on one request barely moves.
    """
    ticks = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/stat") as f:
                # the command name (2nd field) may hold spaces: split after its closing paren
                fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def mb(n_bytes: float) -> float:
    return round(n_bytes / (1024 * 1024), 1)


# --- statistics ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --- the machine ---------------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str | None:
    """First non-empty output line of a version command (nginx -v prints to stderr)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1024 * 1024), 1)
    return None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What a reader needs to compare numbers across runs."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        # Other work on the machine skews every leg; a reader should see how busy it was.
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": (_first_line(["wrk", "-v"]) or "").split(" Copyright")[0].strip() or None,
        "packages": {name: _dist_version(name) for name in ("edgeway", "uvloop", "httptools", "aiohttp")},
        # The gateway processes import edgeway the same way as this one (same environment).
        "edgeway_engine": engine_build(),
    }


@contextlib.contextmanager
def stopping(*processes: ManagedProcess) -> Iterator[None]:
    """Stop the given processes when the block ends, whatever happens inside."""
    try:
        yield
    finally:
        for p in reversed(processes):
            p.stop()
