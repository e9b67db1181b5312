"""Shared test policy.

Tests that need infrastructure the project cannot start itself (PostgreSQL, Redis, RabbitMQ, the
system NATS, nginx, Chromium) call :func:`require`. On a developer's machine a missing service
skips the test with the reason; under CI (``CI=true``) it fails, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: the sockets stay bound until all are chosen (two free_port()
    calls in a row can return the same port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
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
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
        yield [int(s.getsockname()[1]) for s in socks]


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
