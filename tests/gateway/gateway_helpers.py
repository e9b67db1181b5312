"""Run an in-process gateway over real sockets against real (raw asyncio) backends."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def backend(handler: RawHandler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def read_request(r: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One request: head line, lower-cased headers, body (Content-Length or chunked)."""
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(b":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if b"content-length" in headers:
        body = await r.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await r.readuntil(b"\r\n"))[:-2], 16)
            chunk = await r.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return lines[0], headers, body


def config(port: int, **service: Any) -> dict[str, Any]:
    svc = {"instances": [f"http://127.0.0.1:{port}"], **service}
    return {
        "name": "test-gw",
        "services": {"backend": svc},
        "routes": [
            {
                "id": "api",
                "match": {"path": "/api/**"},
                "proxy": {"service": "backend", "strip_prefix": "/api"},
            },
            {"id": "ws", "match": {"path": "/ws"}, "proxy": {"service": "backend", "websocket": True}},
        ],
    }


@contextlib.asynccontextmanager
async def gateway(cfg: dict[str, Any]) -> AsyncIterator[tuple[int, io.BytesIO]]:
    out = io.BytesIO()
    gw = Gateway(validate_config(cfg), AccessLog("test-gw", out))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port, out
    finally:
        await listener.shutdown(1.0)
        await gw.stop()
