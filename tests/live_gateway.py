"""A gateway served from a config file in-process (the way `edgeway gateway` serves it), backends
on edgeway's own engine that say who answered, and a keep-alive client connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from conftest import held_ports
from edgeway.gateway.config import load_config
from edgeway.gateway.process.admin_auth import find_token
from edgeway.gateway.process.serve import GatewayServer
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener, bind_socket
from edgeway.http.server import ServerProtocol


class Backend(Listener):
    """Answers ``<name> <path>``; ``/slow/...`` waits until :attr:`release` is set. Counts the
    connections it accepted."""

    def __init__(self, name: str) -> None:
        super().__init__(self.handle, ServerLimits())
        self.name = name
        self.accepted = 0
        self.requests = 0
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()

    def opened(self, conn: ServerProtocol) -> None:
        self.accepted += 1
        super().opened(conn)

    async def handle(self, ex: Exchange) -> None:
        self.requests += 1
        path = ex.path.decode()
        if path.startswith("/slow"):
            self.slow_started.set()
            await self.release.wait()
        body = f"{self.name} {path}".encode()
        ex.respond(200, [(b"content-type", b"text/plain"), (b"x-backend", self.name.encode())], body)


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, Backend]]:
    started: dict[str, Backend] = {}
    try:
        for name in names:
            b = started[name] = Backend(name)
            await b.start(bind_socket("127.0.0.1", 0, reuse_port=False))
        yield started
    finally:
        for b in started.values():
            b.release.set()
            await b.shutdown(1.0)


def gateway_config(
    port: int,
    admin: int,
    services: dict[str, Any],
    routes: list[dict[str, Any]],
    **top: Any,
) -> dict[str, Any]:
    return {
        "name": "reload-gw",
        "listen": {"port": port},
        "admin": {"port": admin},
        "access_log": {"enabled": False},
        "reload": {"watch": False},
        "services": services,
        "routes": routes,
        **top,
    }


def route(path: str, service: str, tag: str, **proxy: Any) -> dict[str, Any]:
    """A proxy route whose responses carry ``x-config: <tag>``."""
    return {
        "match": {"path": path},
        "proxy": {"service": service, "response_headers": {"set": {"x-config": tag}}, **proxy},
    }


def service(*backends: Backend) -> dict[str, Any]:
    return {"instances": [f"http://127.0.0.1:{b.port}" for b in backends]}


def write(path: Path, config: dict[str, Any]) -> None:
    # JSON is YAML: line and column numbers still point into this file.
    path.write_text(json.dumps(config, indent=2))


@contextlib.asynccontextmanager
async def serving(path: Path) -> AsyncIterator[GatewayServer]:
    sources: list[str] = []
    server = GatewayServer(load_config(path, sources=sources), path, sources=sources)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def ports() -> tuple[int, int]:
    """A listen and an admin port held for the test (:func:`conftest.held_ports`): the tests write
    them into config files they rewrite and reload, and ``--workers`` processes share them."""
    first, second = held_ports(2)
    return first, second


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One HTTP/1.1 keep-alive connection; responses must carry Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def request(
        self, method: str, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None
    ) -> Response:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {"Host": "gw"}).items())
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{extra}Content-Length: 0\r\n\r\n".encode())
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            got: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    k, v = line.split(":", 1)
                    got[k.strip().lower()] = v.strip()
            body = await self.reader.readexactly(int(got.get("content-length", "0")))
        return Response(status, got, body)

    async def get(self, path: str) -> Response:
        return await self.request("GET", path)

    @property
    def closed(self) -> bool:
        return self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def once(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
    client = await Client.connect(port)
    try:
        return await client.request(method, path, headers=headers)
    finally:
        await client.close()


def admin_headers(admin: int) -> dict[str, str]:
    """What a client of the admin API on ``admin`` sends: an address as Host, the token the
    gateway wrote for that port, JSON for writes."""
    headers = {"Host": f"127.0.0.1:{admin}", "Content-Type": "application/json"}
    token = find_token(admin)  # None until a starting gateway has written it: the probes need none
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def admin_once(admin: int, method: str, path: str) -> Response:
    """One request to the admin API with its credential."""
    return await once(admin, method, path, admin_headers(admin))
