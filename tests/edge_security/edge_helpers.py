"""What the edge security tests share: keys and tokens from the real security library, a JWKS
served over real HTTP, a backend that records everything that reached it, gateway configs, and a
gateway served with its admin port (readiness, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from gateway_helpers import backend, gateway, read_request
from prometheus_client.parser import text_string_to_metric_families

from conftest import bound_socket
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin import AdminHandler
from edgeway.gateway.process.admin_auth import AdminGuard
from edgeway.http.listener import Listener, bind_socket
from edgeway.security.keys import KeyRing
from edgeway.security.tokens import TokenIssuer
from edgeway.security_service import SecuritySettings, create_security_app

ADMIN_TOKEN = "edge-test-admin-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ISSUER = "https://auth.test"
AUDIENCE = "shop"

__all__ = ["backend", "gateway", "read_request"]


@dataclass
class Recorder:
    """Requests that reached the backend: (request line, lower-cased headers, body)."""

    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)

    @property
    def lines(self) -> list[bytes]:
        return [line for line, _, _ in self.requests]

    def last_headers(self) -> dict[bytes, bytes]:
        return self.requests[-1][1]


@contextlib.asynccontextmanager
async def recording_backend(status: bytes = b"200 OK") -> AsyncIterator[tuple[int, Recorder]]:
    """A keep-alive backend answering every request with a small JSON body, recording each."""
    recorder = Recorder()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, headers, body = await read_request(r)
                recorder.requests.append((line, headers, body))
                payload = b'{"ok":true}'
                w.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
                )
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async with backend(handle) as port:
        yield port, recorder


@dataclass
class JwksServer:
    """A real HTTP server publishing a key ring's JWKS, counting fetches."""

    ring: KeyRing
    port: int = 0
    fetches: int = 0
    available: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"


@contextlib.asynccontextmanager
async def jwks_server(ring: KeyRing) -> AsyncIterator[JwksServer]:
    server = JwksServer(ring)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(r)
                server.fetches += 1
                if server.available:
                    body = orjson.dumps(server.ring.jwks())
                    w.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                else:
                    w.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async with backend(handle) as port:
        server.port = port
        yield server


def issuer_for(ring: KeyRing, **options: Any) -> TokenIssuer:
    return TokenIssuer(ring, ISSUER, AUDIENCE, **options)


def auth_block(jwks_url: str, **overrides: Any) -> dict[str, Any]:
    return {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE, **overrides}


def edge_config(
    backend_port: int, routes: list[dict[str, Any]], auth: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    """A gateway with one service and the given routes (each proxying to it unless it says)."""
    full = [{"proxy": {"service": "backend"}, **route} for route in routes]
    cfg: dict[str, Any] = {
        "name": "edge-test",
        "services": {"backend": {"instances": [f"http://127.0.0.1:{backend_port}"]}},
        "routes": full,
        **top,
    }
    if auth is not None:
        cfg["auth"] = auth
    return cfg


async def request(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    host: str = "gw.test",
    raw_headers: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, list[str]], bytes]:
    """One HTTP/1.1 request on a fresh connection: status, headers (lower-cased, all values), body."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}", "connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    for name, value in raw_headers or ():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"content-length: {len(body)}")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await w.drain()
    raw = await r.read()
    w.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), found, rest


def problem(body: bytes) -> dict[str, Any]:
    value = orjson.loads(body)
    assert isinstance(value, dict)
    return value


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    """A FastAPI app (the real security service) listening on ``sock``."""
    # log_config=None: uvicorn must not reconfigure this process's logging (other tests read it).
    config = uvicorn.Config(app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(400):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        await task


async def eventually(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await condition() if asyncio.iscoroutinefunction(condition) else condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


SEED = """
scopes: [orders, profile]
roles:
  admin: ["*"]
  customer: ["orders:create"]
users:
  - {username: root, password: "root-password", roles: [admin]}
  - {username: alice, password: "alice-password", roles: [customer]}
  - {username: bob, password: "bob-password", roles: [customer]}
clients:
  - {client_id: web, public: true, grant_types: [password, refresh_token], scopes: [orders, profile]}
"""


@contextlib.asynccontextmanager
async def security_service(directory: Path, **overrides: Any) -> AsyncIterator[str]:
    """The real security service (FastAPI app under uvicorn) on a free port; yields its base URL."""
    seed = directory / "seed.yaml"
    seed.write_text(SEED)
    settings = SecuritySettings(
        **{
            "issuer": ISSUER,
            "audience": [AUDIENCE],
            "db_url": f"sqlite+aiosqlite:///{directory / 'security.db'}",
            "keys_path": directory / "keys.json",
            "seed_file": seed,
            # Cheap hashing: these tests are about flows, not argon2's cost.
            "argon2_time_cost": 1,
            "argon2_memory_cost": 8,
            "argon2_parallelism": 1,
            "throttle_base_delay": 0.0,
            **overrides,
        }
    )
    sock = bound_socket()
    async with serve_app(create_security_app(settings), sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Edge:
    gateway: Gateway
    port: int
    admin: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def readyz(self, http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
        response = await http.get(f"http://127.0.0.1:{self.admin}/readyz", headers=ADMIN_HEADERS)
        return response.status_code, response.json()

    async def metric(self, http: httpx.AsyncClient, name: str, **labels: str) -> float:
        """A sample of the admin port's /metrics; 0 when it has not been recorded."""
        text = (await http.get(f"http://127.0.0.1:{self.admin}/metrics", headers=ADMIN_HEADERS)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@contextlib.asynccontextmanager
async def edge(cfg: dict[str, Any]) -> AsyncIterator[Edge]:
    gw = Gateway(validate_config(cfg), None)
    await gw.start()
    traffic = Listener(gw.handle, gw.limits)
    admin = Listener(AdminHandler(gw, AdminGuard(ADMIN_TOKEN)), gw.limits)
    await traffic.start(bind_socket("127.0.0.1", 0))
    await admin.start(bind_socket("127.0.0.1", 0))
    try:
        yield Edge(gw, traffic.port, admin.port)
    finally:
        await traffic.shutdown(1.0)
        await admin.shutdown(1.0)
        await gw.stop()
