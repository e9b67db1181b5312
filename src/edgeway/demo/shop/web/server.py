"""Serves the web app's files, and ``/config.js``: where the page sends its API calls.

Reached directly (``http://127.0.0.1:8090``) the page runs the **Direct** pattern: it calls each
service on its own port (the services answer CORS for this origin) and logs in at the security
service. Reached through the web BFF, whose route adds ``X-Shop-Edge: web-bff``, the same page
runs the **BFF** pattern: one origin, ``/api/...`` endpoints shaped for it, and live updates over
the BFF's WebSocket.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgeway.observability.logs import setup_logging
from edgeway.service.settings import ServiceSettings
from edgeway.service.tls import uvicorn_tls_options

STATIC = Path(__file__).with_name("static")
EDGE_HEADER = "x-shop-edge"


def _url(env: dict[str, str], name: str, default: int) -> str:
    host = env.get("SHOP_HOST", "127.0.0.1")
    return f"http://{host}:{env.get('SHOP_PORT_' + name.upper().replace('-', '_'), default)}"


def _direct_config(env: dict[str, str]) -> dict[str, object]:
    def url(name: str, default: int) -> str:
        return _url(env, name, default)

    return {
        "mode": "direct",
        "edge": "direct",
        "security": url("security", 8400),
        "services": {
            "catalog": [url("catalog-1", 8101), url("catalog-2", 8102)],
            "inventory": [url("inventory", 8103)],
            "orders": [url("orders", 8104)],
            "notifications": [url("notifications", 8106)],
            "profile": [url("profile", 8107)],
            "legacy": [url("legacy", 8108)],
        },
    }


def _story(env: dict[str, str]) -> dict[str, object]:
    """What the page tells about the system around it: the same page in the other pattern (when
    the demo runs the web BFF; ``SHOP_EDGES`` lists the edges) and the control room, if any."""
    edges = [e for e in env.get("SHOP_EDGES", "web-bff").split(",") if e]
    story: dict[str, object] = {
        "direct_url": _url(env, "web", 8090),
        "bff_url": _url(env, "web-bff", 8081) if "web-bff" in edges else None,
    }
    if env.get("SHOP_CONTROL_URL"):
        story["control"] = env["SHOP_CONTROL_URL"]
    return story


def create_app(env: dict[str, str] | None = None) -> Starlette:
    environ = dict(os.environ if env is None else env)
    direct = {**_direct_config(environ), **_story(environ)}
    bff = {"mode": "bff", "api": "/api", **_story(environ)}

    async def config(request: Request) -> Response:
        edge = request.headers.get(EDGE_HEADER)
        settings = {**bff, "edge": edge} if edge else direct
        body = b"window.SHOP_CONFIG = " + orjson.dumps(settings) + b";\n"
        return Response(body, media_type="application/javascript", headers={"Cache-Control": "no-store"})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/config.js", config),
            Route("/health", health),
            Mount("/", StaticFiles(directory=STATIC, html=True)),
        ]
    )


def main() -> None:
    setup_logging("web", os.environ.get("EDGEWAY_LOG_LEVEL", "info"))
    uvicorn.run(
        create_app(),
        host=os.environ.get("EDGEWAY_HOST", "127.0.0.1"),
        port=int(os.environ.get("EDGEWAY_PORT", "8090")),
        log_config=None,
        access_log=False,
        # HTTPS when EDGEWAY_TLS_CERT/KEY are set (edgeway demo --tls)
        **uvicorn_tls_options(ServiceSettings()),
    )
