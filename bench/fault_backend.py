"""An upstream that can be made to fail on demand, for the fault benchmark and the fault tests.

Modes (``--mode`` at start, or ``GET /_control?mode=<mode>[&reset=1]`` while running; ``reset``
zeroes the counters in the same step):

- ``ok``: every request answers 200 ``{"backend": "<name>"}``;
- ``flaky``: a request fails with 500 with probability ``--fail-ratio`` (``?fail_ratio=`` to change);
- ``hang``: requests are read and never answered (a wedged process: the socket stays open).

Every response carries ``X-Backend: <name>`` so a client can tell which instance served it.
``GET /_stats`` answers ``{"requests": n, "failed": m, "mode": ...}`` (control and stats requests
are not counted); ``GET /_stats?reset=1`` zeroes the counters. ``/health/ready`` follows the
mode like any other path (a hanging process hangs its health check too) but is not counted.

    python -m bench.fault_backend --port 9000 [--name a] [--mode ok] [--fail-ratio 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import cast
from urllib.parse import parse_qs

import httptools

from bench.backend import serve_until_signalled

MODES = ("ok", "flaky", "hang")
HEALTH_PATH = b"/health/ready"


class State:
    """What every connection of one backend process shares."""

    def __init__(self, name: str, mode: str, fail_ratio: float, seed: int | None) -> None:
        self.name = name
        self.mode = mode
        self.fail_ratio = fail_ratio
        self.rng = random.Random(seed)
        self.requests = 0
        self.failed = 0

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "mode": self.mode, "requests": self.requests, "failed": self.failed}

    def control(self, query: dict[str, list[str]]) -> None:
        mode = query.get("mode", [self.mode])[0]
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        if "fail_ratio" in query:
            self.fail_ratio = float(query["fail_ratio"][0])
        if "reset" in query:
            self.requests = self.failed = 0


def _response(status: int, name: bytes, body: bytes, keep_alive: bool) -> bytes:
    reason = b"OK" if status == 200 else b"Internal Server Error" if status == 500 else b"Bad Request"
    head = b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\nx-backend: %b\r\ncontent-length: %d\r\n" % (
        status,
        reason,
        name,
        len(body),
    )
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


class FaultProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self._state = state
        self._name = state.name.encode()
        self._ok = json.dumps({"backend": state.name}).encode()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._hung = False  # a request was left unanswered: later ones on this connection wait behind it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_response(400, self._name, b"{}", False), close=True)

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        keep_alive = bool(self._parser.should_keep_alive())
        parsed = httptools.parse_url(self._url)
        state = self._state
        if parsed.path == b"/_stats":
            query = parse_qs((parsed.query or b"").decode())
            body = json.dumps(state.stats()).encode()
            if "reset" in query:
                state.requests = state.failed = 0
            self._write(_response(200, self._name, body, keep_alive), close=not keep_alive)
            return
        if parsed.path == b"/_control":
            try:
                state.control(parse_qs((parsed.query or b"").decode()))
            except ValueError as exc:
                self._write(_response(400, self._name, json.dumps({"error": str(exc)}).encode(), False), True)
                return
            self._write(
                _response(200, self._name, json.dumps(state.stats()).encode(), keep_alive), not keep_alive
            )
            return
        counted = parsed.path != HEALTH_PATH
        if state.mode == "hang" or self._hung:
            self._hung = True
            if counted:
                state.requests += 1
            return
        status = 200
        if state.mode == "flaky" and counted and state.rng.random() < state.fail_ratio:
            status = 500
        if counted:
            state.requests += 1
            state.failed += status == 500
        body = self._ok if status == 200 else b'{"error": "injected failure"}'
        self._write(_response(status, self._name, body, keep_alive), close=not keep_alive)

    def _write(self, data: bytes, close: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        if close:
            self._transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fault_backend", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend", help="reported in X-Backend and the body")
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--fail-ratio", type=float, default=0.5, help="share of 500s in flaky mode")
    parser.add_argument("--seed", type=int, default=None, help="seed of the flaky coin (reproducible runs)")
    args = parser.parse_args(argv)
    import uvloop

    state = State(args.name, args.mode, args.fail_ratio, args.seed)
    uvloop.run(serve_until_signalled(args.host, args.port, lambda: FaultProtocol(state)))


if __name__ == "__main__":
    main()
