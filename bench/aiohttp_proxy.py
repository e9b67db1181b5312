"""The baseline: a reverse proxy written the plain way with aiohttp's client and server.

It does the same job as the gateway's proxy route: forward method, path and query, headers (minus
hop-by-hop ones, plus ``X-Forwarded-For``) and the body, and stream the response back. One
process on uvloop with a keep-alive upstream pool, no access log: the strongest version a
competent developer would write in an afternoon, so the ratio against it is not flattered.

    python -m bench.aiohttp_proxy --port 9100 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from bench.backend import announce

# RFC 9110 section 7.6.1, plus Host: the client library sets the upstream's own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
_UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


def forward_headers(headers: MultiMapping[str], peer: str | None) -> CIMultiDict[str]:
    """Request headers for the upstream: hop-by-hop ones dropped, X-Forwarded-For extended."""
    items = list(headers.items())
    connection_named: set[str] = set()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        if name.lower() == "connection":
            connection_named.update(token.strip().lower() for token in value.split(","))
    for name, value in items:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower == "host":
            continue
        out.add(name, value)
    if peer:
        prior = out.popall("X-Forwarded-For", [])
        out["X-Forwarded-For"] = ", ".join([*prior, peer])
    return out


async def _proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[_SESSION]
    # The target exactly as the client sent it: re-quoting would change what the backend sees.
    url = URL(request.app[_UPSTREAM] + request.raw_path, encoded=True)
    headers = forward_headers(request.headers, request.remote)
    data = request.content.iter_any() if request.body_exists else None
    async with session.request(
        request.method, url, headers=headers, data=data, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def make_app(upstream: str, limit_per_host: int = 256) -> web.Application:
    """``limit_per_host``: open upstream connections per host; 0 is aiohttp's "no limit"."""
    app = web.Application()
    app[_UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # auto_decompress off: a proxy passes bodies through as they are.
        connector = TCPConnector(limit=0, limit_per_host=limit_per_host, keepalive_timeout=60)
        async with ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=ClientTimeout(total=30),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        ) as session:
            app[_SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app


def serve_app(app: web.Application, host: str, port: int) -> None:
    """Run an aiohttp baseline the same way for every benchmark: uvloop, no access log."""
    import uvloop

    loop = uvloop.new_event_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    announce(host, sock.getsockname()[1])  # port 0: the one it took
    web.run_app(app, sock=sock, access_log=None, print=None, backlog=4096, loop=loop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument(
        "--limit-per-host", type=int, default=256, help="upstream connections per host; 0: no limit"
    )
    args = parser.parse_args(argv)
    serve_app(make_app(args.upstream, args.limit_per_host), args.host, args.port)


if __name__ == "__main__":
    main()
