"""Real HTTP servers on loopback ports of their own for the service-kit tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from conftest import bound_socket


@asynccontextmanager
async def serve(app: ASGIApp, sock: socket.socket | None = None, **options: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on ``sock`` (a :func:`conftest.bound_socket`, when the app must
    know its port before it starts) or a port of its own; yields its base URL (``https://``
    when ``options``, more ``uvicorn.Config`` arguments, make it serve TLS)."""
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
