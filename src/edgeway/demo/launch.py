"""Start ``edgeway demo`` as a child process on free ports, for tests and benchmarks.

>>> with launched_demo(tmp_dir, pattern="all") as demo:
...     print(demo.url("web-bff"))

It runs the real command (``python -m edgeway.cli demo``) with every port chosen free and a data
directory of its own, waits for the "all N processes are ready" line, and at the end stops it
with SIGINT — what Ctrl-C does — failing loudly if it does not exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeway.demo.plan import DEFAULT_PORTS
from edgeway.system import load_system, process_ports

__all__ = ["READY_LINE", "DemoFailed", "LaunchedDemo", "free_ports", "launched_demo"]

READY_LINE = "processes are ready"


class DemoFailed(Exception):
    """The demo did not get ready, or did not stop cleanly; the message ends with its output."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now (held together while choosing, so no repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class LaunchedDemo:
    ports: dict[str, int]
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    tls: bool = False

    def url(self, name: str) -> str:
        """``name``'s base URL; https:// for a ``tls`` demo (every process but NATS and the
        edges' admin ports serves HTTPS then)."""
        https = self.tls and name != "nats" and not name.endswith("-admin")
        return f"{'https' if https else 'http'}://127.0.0.1:{self.ports[name]}"

    @property
    def ca_file(self) -> Path:
        """The demo's CA certificate (``tls``): what a client trusts."""
        return self.data_dir / "tls" / "ca.pem"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def launched_demo(
    workdir: Path,
    *,
    pattern: str = "all",
    extra_args: Sequence[str] = (),
    ready_timeout: float = 120.0,
    attempts: int = 3,
    env: Mapping[str, str] | None = None,
    system: Path | None = None,
    tls: bool = False,
) -> Iterator[LaunchedDemo]:
    """Start the demo and yield it once ready; stop it at the end.

    Free ports are only free until someone takes them: when the demo refuses a port that was
    taken meanwhile (it checks before starting anything), it is started again on new ports.
    ``env`` adds variables to the demo's environment (the edge configs read ``SHOP_*`` ones).
    ``system``: run that system file (``--system``) instead of the shop; its ports are chosen free.
    ``tls``: ``edgeway demo --tls`` (HTTPS, mTLS to the services; the CA is ``ca_file``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    names = list(DEFAULT_PORTS) if system is None else list(process_ports(load_system(system).model))
    for attempt in range(attempts):
        demo = _start(
            workdir, pattern, [*extra_args, *(["--tls"] if tls else [])], attempt, env or {}, names, system
        )
        demo.tls = tls
        try:
            _wait_ready(demo, ready_timeout)
        except DemoFailed:
            if "already in use" in demo.output() and attempt + 1 < attempts:
                continue
            _stop(demo)
            raise
        break
    try:
        yield demo
    finally:
        _stop(demo)


def _start(
    workdir: Path,
    pattern: str,
    extra_args: Sequence[str],
    attempt: int,
    extra_env: Mapping[str, str],
    names: Sequence[str],
    system: Path | None,
) -> LaunchedDemo:
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    data_dir = workdir / "data"
    log = workdir / ("demo.log" if attempt == 0 else f"demo-{attempt}.log")
    argv = [sys.executable, "-m", "edgeway.cli", "demo", "--pattern", pattern, "--data-dir", str(data_dir)]
    if system is not None:
        argv += ["--system", str(system.resolve())]
    argv += list(extra_args)
    for name, port in ports.items():
        argv += ["--port", f"{name}={port}"]
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1", **extra_env}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return LaunchedDemo(ports, data_dir, log, process)


def _wait_ready(demo: LaunchedDemo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while READY_LINE not in demo.output():
        if demo.process.poll() is not None or time.monotonic() > deadline:
            raise DemoFailed(f"edgeway demo did not get ready:\n{demo.output()[-6000:]}")
        time.sleep(0.2)


def _stop(demo: LaunchedDemo) -> None:
    process = demo.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise DemoFailed(f"edgeway demo did not stop on SIGINT:\n{demo.output()[-3000:]}") from None
