"""A small JSON backend served by edgeway's own engine: the demo's stand-in service."""

from __future__ import annotations

import asyncio
import os

from edgeway.http.exchange import Exchange
from edgeway.http.server import Handler

PRODUCTS = [
    {"id": 1, "name": "Espresso cup", "price": 8.5},
    {"id": 2, "name": "Moka pot", "price": 34.0},
    {"id": 3, "name": "Grinder", "price": 89.0},
]


def make_handler(instance: str) -> Handler:
    async def handle(ex: Exchange) -> None:
        body = await ex.body.read_all(1 << 20)
        path = ex.path.decode()
        seen = {
            "instance": instance,
            "pid": os.getpid(),
            "request_id": (ex.header(b"x-request-id") or b"").decode(),
        }
        if path in ("/products", "/products/"):
            ex.respond_json(200, {"products": PRODUCTS, "served_by": seen})
        elif path.startswith("/products/") and path.rsplit("/", 1)[1].isdigit():
            pid = int(path.rsplit("/", 1)[1])
            product = next((p for p in PRODUCTS if p["id"] == pid), None)
            if product is None:
                ex.respond_problem(404, "Not Found", f"no product {pid}")
            else:
                ex.respond_json(200, {**product, "served_by": seen})
        elif path == "/slow":
            await asyncio.sleep(2)
            ex.respond_json(200, {"slow": True, "served_by": seen})
        elif path == "/echo":
            headers = {k.decode(): v.decode(errors="replace") for k, v in ex.headers}
            ex.respond_json(200, {"method": ex.method.decode(), "headers": headers, "body_bytes": len(body)})
        else:
            ex.respond_problem(404, "Not Found", "try /products, /products/1, /echo, /slow")

    return handle
