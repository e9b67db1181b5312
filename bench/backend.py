"""A small, fast upstream for the benchmarks: raw asyncio protocol, httptools, uvloop.

It must never be the bottleneck (one process serves well over 50k req/s on one core here, so the
proxy in front of it is what wrk measures). Every path answers 200 with a fixed JSON body
``{"<name>": {"id": 1, "pad": "..."}}`` of ``--body-size`` bytes (at least the JSON skeleton), so
three backends with distinct names merge without key collisions in the aggregate benchmark.

``/echo`` answers with what arrived (method, target, headers, body) for tests of what a proxy
forwards. A delay (``--delay-ms`` for every request, ``?delay_ms=N`` per request) models a
service that takes time; delayed responses on one connection still go out in request order.

    python -m bench.backend --port 9000 [--name a] [--body-size 64] [--delay-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import parse_qs

import httptools

_MAX_DELAY_MS = 60_000


def make_body(name: str, size: int) -> bytes:
    skeleton = json.dumps({name: {"id": 1, "pad": ""}}, separators=(",", ":"))
    pad = max(0, size - len(skeleton))
    return json.dumps({name: {"id": 1, "pad": "x" * pad}}, separators=(",", ":")).encode()


def _response(body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
    )
    if not keep_alive:
        head += b"\r\nConnection: close"
    return head + b"\r\n\r\n" + body


class _Slot:
    """One response in a connection's queue; ``data`` is None until its delay has passed."""

    __slots__ = ("close_after", "data")

    def __init__(self, data: bytes | None, close_after: bool) -> None:
        self.data = data
        self.close_after = close_after


class BackendProtocol(asyncio.Protocol):
    def __init__(self, name: str, body: bytes, delay_ms: float) -> None:
        # --- configuration ---
        self._body = body
        self._delay_s = delay_ms / 1000
        self._ok_keepalive = _response(body, b"application/json", True)
        # --- per connection ---
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # Responses leave in request order even when delays differ (pipelining).
        self._queue: deque[_Slot] = deque()
        self._closing = False
        # --- per request ---
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body_parts: list[bytes] = []

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except httptools.HttpParserError:
            self._fail(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def pause_writing(self) -> None:
        # A client that pipelines faster than it reads would grow our write buffer without bound.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body_parts = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        keep_alive = bool(self._parser.should_keep_alive())
        delay_s = self._delay_s
        url = self._url
        if url.startswith(b"/echo") or b"delay_ms=" in url:
            parsed = httptools.parse_url(url)
            if parsed.query and b"delay_ms=" in parsed.query:
                delay_s = _query_delay_s(parsed.query, delay_s)
            if parsed.path == b"/echo":
                data = self._echo(parsed.path, url, keep_alive)
            else:
                data = self._plain(keep_alive)
        else:
            data = self._plain(keep_alive)
        if delay_s <= 0:
            self._queue.append(_Slot(data, not keep_alive))
            self._flush()
            return
        slot = _Slot(None, not keep_alive)
        self._queue.append(slot)
        self._loop.call_later(delay_s, self._ready, slot, data)

    # responses

    def _plain(self, keep_alive: bool) -> bytes:
        return self._ok_keepalive if keep_alive else _response(self._body, b"application/json", False)

    def _echo(self, path: bytes, url: bytes, keep_alive: bool) -> bytes:
        body = json.dumps(
            {
                "method": self._parser.get_method().decode(),
                "target": url.decode("latin-1"),
                "path": path.decode("latin-1"),
                "http_version": self._parser.get_http_version(),
                "headers": self._headers,
                "body": b"".join(self._body_parts).decode("latin-1"),
            }
        ).encode()
        return _response(body, b"application/json", keep_alive)

    def _ready(self, slot: _Slot, data: bytes) -> None:
        slot.data = data
        self._flush()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        while self._queue and self._queue[0].data is not None:
            slot = self._queue.popleft()
            data = slot.data
            if data is not None:
                transport.write(data)
            if slot.close_after:
                self._closing = True
                self._queue.clear()
                transport.close()
                return

    def _fail(self, data: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._closing = True
            self._transport.write(data)
            self._transport.close()


def _query_delay_s(query: bytes, default_s: float) -> float:
    values = parse_qs(query.decode("latin-1")).get("delay_ms")
    if not values:
        return default_s
    try:
        ms = float(values[0])
    except ValueError:
        return default_s
    return min(max(ms, 0.0), _MAX_DELAY_MS) / 1000


def announce(host: str, port: int) -> None:
    """The start line naming the port a server bound (``--port 0`` takes a free one), which
    bench.harness.ManagedProcess(port=0) waits for; stdlib only, as these servers are measured."""
    print(f"listening on {host}:{port}", file=sys.stderr, flush=True)


async def serve(host: str, port: int, name: str, body_size: int, delay_ms: float) -> None:
    body = make_body(name, body_size)
    await serve_until_signalled(host, port, lambda: BackendProtocol(name, body, delay_ms))


async def serve_until_signalled(host: str, port: int, factory: Callable[[], asyncio.Protocol]) -> None:
    """Serve ``factory``'s protocol on host:port until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    # reuse_port: a caller may hold the port it names with SO_REUSEPORT (harness.reserved_port)
    server = await loop.create_server(factory, host, port, backlog=4096, reuse_address=True, reuse_port=True)
    announce(host, server.sockets[0].getsockname()[1])  # port 0: the one it took
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backend", description=(__doc__ or "").splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend", help="top-level JSON key of the body")
    parser.add_argument("--body-size", type=int, default=64, help="body size in bytes (minimum: the JSON)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before every response")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, args.name, args.body_size, args.delay_ms))


if __name__ == "__main__":
    main()
