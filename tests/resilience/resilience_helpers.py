"""An in-process gateway over real sockets, with its Gateway object at hand (metrics, readiness),
and small raw asyncio backends that count what reaches them."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

# The gateway tests' helpers (read_request, backend) serve these tests too (tests/gateway is on
# the import path: pyproject.toml, pytest's pythonpath and mypy's mypy_path).
from gateway_helpers import RawHandler, backend, read_request

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket

__all__ = ["Reply", "Seen", "answering", "backend", "config", "get", "read_request", "running"]

Seen = list[tuple[bytes, dict[bytes, bytes], bytes]]  # what a backend got: line, headers, body


def answering(
    name: str, seen: Seen, status: int = 200, body: bytes | None = None, delay: float = 0.0
) -> RawHandler:
    """A keep-alive backend answering every request with ``status`` and ``body`` (its name by
    default) after ``delay`` seconds, recording each request in ``seen``."""
    payload = name.encode() if body is None else body

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await read_request(r))
                if delay:
                    await asyncio.sleep(delay)
                w.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%b" % (status, len(payload), payload))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    return handler


def config(instances: list[int], route: dict[str, Any] | None = None, **service: Any) -> dict[str, Any]:
    return {
        "name": "res-gw",
        "admin": None,
        "services": {"svc": {"instances": [f"http://127.0.0.1:{p}" for p in instances], **service}},
        "routes": [{"id": "api", "match": {"path": "/**"}, "proxy": {"service": "svc"}, **(route or {})}],
    }


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any]) -> AsyncIterator[tuple[int, Gateway]]:
    gw = Gateway(validate_config(cfg), AccessLog("res-gw", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port, gw
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {
            k.strip().lower(): v.strip()
            for k, v in (line.split(b":", 1) for line in lines[1:] if b":" in line)
        }

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:80]!r}>"


async def get(
    port: int, path: str = "/x", method: str = "GET", headers: str = "", body: bytes = b""
) -> Reply:
    """One request on its own connection (Connection: close), read to the end."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    length = f"content-length: {len(body)}\r\n" if body else ""
    w.write(
        f"{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{length}{headers}\r\n".encode() + body
    )
    try:
        raw = await asyncio.wait_for(r.read(), 10)
    finally:
        w.close()
    return Reply(raw)
