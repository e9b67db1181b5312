"""Shared test policy.

Tests that need infrastructure the project cannot start itself (PostgreSQL, Redis, RabbitMQ, the
system NATS, nginx, Chromium) call :func:`require`. On a developer's machine a missing service
skips the test with the reason; under CI (``CI=true``) it fails, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
    "mariadb": ("127.0.0.1", 3306),
}

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The service kit freezes the heap once a service has started (ServiceSettings.gc_freeze): in a
# test worker that starts hundreds of apps, everything alive at each start (earlier tests'
# apps in reference cycles) would never be collected. Off here, except where a test checks it.
os.environ.setdefault("EDGEWAY_GC_FREEZE", "false")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI requires it: {reason}", pytrace=False)
    pytest.skip(reason)


def require(*names: str) -> None:
    """Skip (locally) or fail (in CI) unless every named service or binary is available."""
    for name in names:
        if name in SERVICES:
            host, port = SERVICES[name]
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                _missing(f"{name} is not reachable on {host}:{port}")
        elif shutil.which(name) is None:
            _missing(f"{name} is not installed (apt-get install {name})")


# Sockets held for the running test (dead_port, held_ports), closed when it ends.
_held: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _release_held_ports() -> Iterator[None]:
    yield
    while _held:
        _held.pop().close()


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port and not listening yet: for an in-process
    server whose port must be known before it starts (``uvicorn.Server.serve(sockets=[sock])``,
    ``asyncio.start_server(sock=sock)``). Until the server listens, connections are refused.
    There is no ``free_port()``: a port found free and closed again can be taken by anything on
    the machine before the test binds it (CI failed with ``Address already in use``). Servers in
    the test bind port 0 and report the port; :func:`dead_port` is an address nothing listens on;
    :func:`reserved_ports` / :func:`held_ports` hold a port for a process that must be told it.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def dead_port() -> int:
    """A loopback port nothing listens on, for the rest of the test: a socket holds it bound
    without listening, so connections are refused and nothing else can take it meanwhile."""
    s = bound_socket()
    _held.append(s)
    return int(s.getsockname()[1])


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process ``pid`` listens on, from Linux's /proc: for a server told port 0 that
    does not say which port it took (Prometheus)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def _reserve() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


def held_ports(n: int) -> list[int]:
    """:func:`reserved_ports` held for the rest of the test rather than a block."""
    socks = [_reserve() for _ in range(n)]
    _held.extend(socks)
    return [int(s.getsockname()[1]) for s in socks]


@contextlib.contextmanager
def reserved_ports(n: int) -> Iterator[list[int]]:
    """``n`` ports held for the block, for a server that must be told its port in advance (a
    gateway with several workers: they share one named port). Each port stays bound, without
    listening, with SO_REUSEPORT: nothing else on the machine can take it meanwhile, while a
    server that binds with SO_REUSEPORT as the same user (the gateway does) still can, and only
    listening sockets receive connections. Servers that can bind port 0 should do so instead.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(_reserve()) for _ in range(n)]
        yield [int(s.getsockname()[1]) for s in socks]


def gateway_ports(stdout: Iterable[bytes]) -> tuple[int, int | None]:
    """The listen and admin ports an ``edgeway gateway`` process reports in its ``gateway
    listening`` line (JSON lines on stdout): how a test finds a gateway started with ``port: 0``.
    Reads up to that line (blocking); fails if the output ends first."""
    for line in stdout:
        if line.startswith(b"{") and (event := json.loads(line)).get("message") == "gateway listening":
            admin = event.get("admin")
            return int(event["listen"].rsplit(":", 1)[1]), int(admin.rsplit(":", 1)[1]) if admin else None
    raise AssertionError("the gateway's output ended before it listened")


async def raw_http(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port; read until the server closes or `wait` passes."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    out = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await r.read(65536):
                out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    w.close()
    return out


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF or a reset, then close ``writer`` (a TCP relay's half)."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


COMPILED_RUN = os.environ.get("EDGEWAY_EXPECT_COMPILED") == "1"


def spies_on_engine() -> None:
    """For a fixture that spies on the engine by replacing one of its methods: a compiled build
    (``./dev test-compiled``) cannot be patched, so its tests are skipped there; the interpreted
    run (``./dev test``) covers them."""
    if COMPILED_RUN:
        pytest.skip("spies on engine code by patching it; a compiled build cannot be patched")


async def delete_nats_streams(prefix: str, url: str = "nats://127.0.0.1:4222") -> None:
    """Delete the JetStream streams a test made on the system NATS: those named ``<prefix>_...``
    (case-insensitive: services upper-case their stream names)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.lower().startswith(prefix.lower() + "_"):
                await js.delete_stream(name)
    finally:
        await nc.close()
