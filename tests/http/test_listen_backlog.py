"""The listen backlog the kernel really holds for each listening socket (``ss -ltn``'s Send-Q).

A listener whose backlog is the event loop's default (100) drops SYNs when a thousand clients
connect at once; the kernel's view is the only trustworthy one, since ``create_server`` calls
``listen()`` again on a socket it is handed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Callable

import pytest
import uvloop
from engine_helpers import echo

from edgeway.gateway.config import validate_config
from edgeway.gateway.process.serve import GatewayServer
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import BACKLOG, Listener, bind_socket

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except OSError:
        return socket.SOMAXCONN


def kernel_backlog(port: int) -> int:
    """The accept-queue size of the socket listening on 127.0.0.1:port, as the kernel reports it."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert len(rows) == 1, out
    # State Recv-Q Send-Q Local Peer; for a listening socket Send-Q is the backlog.
    return int(rows[0][2])


EXPECTED = min(BACKLOG, somaxconn())

LOOPS: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
    ("asyncio", asyncio.new_event_loop),
    ("uvloop", uvloop.new_event_loop),
]


@pytest.mark.parametrize("loop_factory", [f for _, f in LOOPS], ids=[n for n, _ in LOOPS])
def test_a_listener_listens_with_the_backlog_it_asks_for(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    assert EXPECTED > 100, "the machine's somaxconn is too small for this test to tell"

    async def main() -> int:
        listener = Listener(echo, ServerLimits())
        await listener.start(bind_socket("127.0.0.1", 0))
        try:
            return await asyncio.to_thread(kernel_backlog, listener.port)
        finally:
            await listener.shutdown(1.0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == EXPECTED


def test_the_gateway_and_its_admin_api_listen_with_the_full_backlog() -> None:
    config = validate_config(
        {
            "version": 1,
            "name": "backlog",
            "listen": {"host": "127.0.0.1", "port": 0},
            "admin": {"host": "127.0.0.1", "port": 0},
            "services": {"b": {"instances": ["http://127.0.0.1:9"]}},
            "routes": [{"match": {"path": "/**"}, "proxy": {"service": "b"}}],
        }
    )

    async def main() -> tuple[int, int]:
        server = GatewayServer(config)
        await server.start()
        try:
            admin_port = server.admin_port
            assert admin_port is not None
            return (
                await asyncio.to_thread(kernel_backlog, server.port),
                await asyncio.to_thread(kernel_backlog, admin_port),
            )
        finally:
            await server.shutdown()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == (EXPECTED, EXPECTED)
