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


def _direct_config(env: dict[str, str]) -> dict[str, object]:
    host = env.get("SHOP_HOST", "127.0.0.1")

    def url(name: str, default: int) -> str:
        return f"http://{host}:{env.get('SHOP_PORT_' + name.upper().replace('-', '_'), default)}"

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


def create_app(env: dict[str, str] | None = None) -> Starlette:
    direct = _direct_config(dict(os.environ if env is None else env))

    async def config(request: Request) -> Response:
        edge = request.headers.get(EDGE_HEADER)
        settings = {"mode": "bff", "edge": edge, "api": "/api"} if edge else direct
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
