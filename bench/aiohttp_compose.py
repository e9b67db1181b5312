"""The aggregate baseline: one aiohttp endpoint that calls several backends in parallel and merges.

``GET /`` calls every ``--upstream`` at ``/`` concurrently over a keep-alive pool, parses each JSON
object body and answers with their union (the backends use distinct top-level keys, see
:mod:`bench.backend`). A failed call fails the request with 502: the same job a declarative
aggregate endpoint of the gateway does, written the way a developer would by hand.

    python -m bench.aiohttp_compose --port 9200 --upstream http://127.0.0.1:9001 \
        --upstream http://127.0.0.1:9002 --upstream http://127.0.0.1:9003
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from bench.aiohttp_proxy import serve_app

_SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
_UPSTREAMS: web.AppKey[tuple[str, ...]] = web.AppKey("upstreams", tuple)


async def _fetch(session: ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise web.HTTPBadGateway(text=f"{url} answered {response.status}")
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise web.HTTPBadGateway(text=f"{url} answered a JSON {type(data).__name__}, not an object")
    return data


async def _compose(request: web.Request) -> web.Response:
    session = request.app[_SESSION]
    try:
        parts = await asyncio.gather(*(_fetch(session, url + "/") for url in request.app[_UPSTREAMS]))
    except (ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        raise web.HTTPBadGateway(text=f"a backend call failed: {exc!r}") from exc
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return web.Response(body=orjson.dumps(merged), content_type="application/json")


def make_app(upstreams: Sequence[str]) -> web.Application:
    app = web.Application()
    app[_UPSTREAMS] = tuple(u.rstrip("/") for u in upstreams)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60)
        async with ClientSession(connector=connector, timeout=ClientTimeout(total=10)) as session:
            app[_SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", _compose)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_compose")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="repeat for each backend")
    args = parser.parse_args(argv)
    serve_app(make_app(args.upstream), args.host, args.port)


if __name__ == "__main__":
    main()
