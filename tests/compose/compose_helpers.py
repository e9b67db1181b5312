"""Real JSON services on loopback sockets, and a gateway in front of them, for composition tests.

A :class:`JsonService` answers each request with what its ``handler`` returns — a JSON value
(200), a :class:`Reply` (status, body, headers, delay), or raises to drop the connection — and
records every request it got, so tests assert what the gateway sent as well as what it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from gateway_helpers import gateway, read_request


@dataclass
class Seen:
    """One request a service received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # a body sent as is instead of JSON


Handler = Callable[[Seen], Any | Awaitable[Any]]


class JsonService:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    line, headers, body = await read_request(r)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target, _ = line.decode().split(" ", 2)
                parts = urlsplit(target)
                seen = Seen(
                    method,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.decode(): v.decode() for k, v in headers.items()},
                    body,
                )
                self.seen.append(seen)
                result = self.handler(seen)
                if asyncio.iscoroutine(result):
                    result = await result
                reply = result if isinstance(result, Reply) else Reply(body=result)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                data = reply.raw if reply.raw is not None else orjson.dumps(reply.body)
                head = f"HTTP/1.1 {reply.status} X\r\ncontent-type: application/json\r\n"
                head += f"content-length: {len(data)}\r\n"
                for name, value in reply.headers.items():
                    head += f"{name}: {value}\r\n"
                w.write(head.encode() + b"\r\n" + data)
                await w.drain()
        except ConnectionError:
            return
        finally:
            w.close()


@contextlib.asynccontextmanager
async def services(**handlers: Handler) -> AsyncIterator[dict[str, JsonService]]:
    started = {name: JsonService(handler) for name, handler in handlers.items()}
    for service in started.values():
        await service.start()
    try:
        yield started
    finally:
        for service in started.values():
            service.close()


def service_config(running: dict[str, JsonService], **overrides: Any) -> dict[str, Any]:
    return {name: {"instances": [svc.url], **overrides.get(name, {})} for name, svc in running.items()}


def aggregate_config(
    running: dict[str, JsonService], aggregate: dict[str, Any], *, path: str = "/screen", **route: Any
) -> dict[str, Any]:
    return {
        "name": "compose-test",
        "services": service_config(running, **route.pop("service_overrides", {})),
        "routes": [
            {
                "id": "screen",
                "match": {"path": path, **route.pop("match", {})},
                "aggregate": aggregate,
                **route,
            }
        ],
    }


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def request(
    port: int, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """One request on a fresh connection; the whole response."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"content-length: {len(body)}\r\n"
    w.write(head.encode() + b"\r\n" + (body or b""))
    data = await r.read()
    w.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    # Composed responses are whole: the gateway always frames them with Content-Length.
    assert "transfer-encoding" not in out, out
    return Answer(status, out, payload)


__all__ = ["Answer", "JsonService", "Reply", "Seen", "aggregate_config", "gateway", "request", "services"]
