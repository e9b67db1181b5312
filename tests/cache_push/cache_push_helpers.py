"""A real gateway in-process and real backends for the cache and push tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from gateway_helpers import read_request

import edgeway.gateway.core.runtime as runtime
from conftest import require
from edgeway.gateway.config import validate_config
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.pipeline import ADMIT, Filter, GatewayEnv, Identity, RequestContext, Verdict
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.filters.auth.filter import build_auth
from edgeway.http.listener import Listener, bind_socket

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
Responder = Callable[[bytes, dict[bytes, bytes]], Awaitable[Reply]]


@dataclass
class Backend:
    """An HTTP/1.1 keep-alive server that records every request it gets."""

    respond: Responder
    port: int = 0
    seen: list[tuple[bytes, dict[bytes, bytes]]] = field(default_factory=list)

    def count(self, fragment: bytes = b"") -> int:
        return sum(1 for line, _ in self.seen if fragment in line)

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, headers, _ = await read_request(r)
                self.seen.append((line, headers))
                status, extra, body = await self.respond(line, headers)
                head = b"HTTP/1.1 %d X\r\n" % status
                for name, value in extra:
                    head += name + b": " + value + b"\r\n"
                chunked = any(n.lower() == b"transfer-encoding" for n, _ in extra)
                if chunked:
                    w.write(head + b"\r\n")
                    for i in range(0, len(body), 1000):
                        part = body[i : i + 1000]
                        w.write(b"%x\r\n%b\r\n" % (len(part), part))
                        await w.drain()
                    w.write(b"0\r\n\r\n")
                else:
                    w.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test ended while the connection idled
        finally:
            w.close()


@contextlib.asynccontextmanager
async def running_backend(respond: Responder) -> AsyncIterator[Backend]:
    b = Backend(respond)
    server = await asyncio.start_server(b.serve, "127.0.0.1", 0)
    b.port = int(server.sockets[0].getsockname()[1])
    try:
        yield b
    finally:
        server.close()


@dataclass
class RunningGateway:
    gw: Gateway
    port: int
    log: io.BytesIO
    listener: Listener


@contextlib.asynccontextmanager
async def running_gateway(cfg: dict[str, Any], grace: float = 1.0) -> AsyncIterator[RunningGateway]:
    out = io.BytesIO()
    gw = Gateway(validate_config(cfg), AccessLog(cfg.get("name", "test-gw"), out))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield RunningGateway(gw, listener.port, out, listener)
    finally:
        await listener.shutdown(grace)
        await gw.stop()


async def no_connection_left(g: RunningGateway, within: float = 1.0) -> None:
    """Wait until the gateway holds no client connection (a stalled client's was cut: a polite
    close would wait, forever, for its unread bytes to drain)."""
    async with asyncio.timeout(within):
        while g.listener.connections:
            await asyncio.sleep(0.02)


class HeaderIdentity:
    """Stands in for the auth filter: ``X-Test-User: alice[;role,role]`` becomes the identity;
    ``X-Test-Expires-In: 0.5`` gives its token an ``exp`` that far in the future."""

    def on_request(self, ctx: RequestContext) -> Verdict:
        raw = ctx.ex.header(b"x-test-user")
        if raw is not None:
            subject, _, roles = raw.decode().partition(";")
            claims: dict[str, Any] = {"sub": subject, "tenant": f"t-{subject}"}
            expires_in = ctx.ex.header(b"x-test-expires-in")
            if expires_in is not None:
                claims["exp"] = time.time() + float(expires_in)
            ctx.identity = Identity(
                subject=subject,
                client_id=None,
                roles=frozenset(r for r in roles.split(",") if r),
                scopes=frozenset(),
                claims=claims,
                token="test-token",
            )
        return ADMIT


def header_identity(route: Route, env: GatewayEnv) -> Filter:
    return HeaderIdentity()


def with_test_identity(monkeypatch: Any) -> None:
    """Put :func:`header_identity` where the auth filter sits in the pipeline."""
    filters = list(runtime.FILTERS)
    filters.insert(filters.index(build_auth) + 1, header_identity)
    monkeypatch.setattr(runtime, "FILTERS", filters)


async def http(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, lower-cased headers, body."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    w.write(head.encode() + b"\r\n" + (body or b""))
    raw = await asyncio.wait_for(r.read(), 10)
    w.close()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    if out.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, out, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


@contextlib.asynccontextmanager
async def own_redis_prefix() -> AsyncIterator[str]:
    """A key prefix of the test's own on the Redis at 127.0.0.1:6379; its keys go afterwards."""
    require("redis")
    prefix = f"edgeway-test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
