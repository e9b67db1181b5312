"""The RPC benchmark's JSON call answered by a bare HTTP/1.1 server: no framework.

The same call as the kit service answers (:mod:`bench.rpc_peer` ``http``): the JSON request
parsed, the answer built and written as JSON, on an asyncio protocol with httptools under
uvloop, keep-alive, nothing else. Beside the kit service it tells what HTTP/1.1 with JSON costs
as a protocol and what a service framework's stack (FastAPI, the kit's middleware) adds, the
way the gRPC and NATS legs' servers are bare too.

    python -m bench.rpc_bare --port 0
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, cast

import httptools
import orjson

from bench.backend import serve_until_signalled
from bench.rpc_peer import answer

_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class BareJson(asyncio.Protocol):
    """POST a JSON ``{"sku", "qty"}``: the stock answer as JSON. Requests in order, keep-alive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_BAD)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        try:
            request: dict[str, Any] = orjson.loads(b"".join(self.body))
            payload = orjson.dumps(answer(str(request["sku"]), int(request["qty"])))
        except (ValueError, KeyError, TypeError):
            self.transport.write(_BAD)
            self.transport.close()
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (len(payload), payload)
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve_until_signalled(args.host, args.port, BareJson))  # announces the port


if __name__ == "__main__":
    main()
