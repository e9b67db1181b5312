"""Four small shop services for the BFF profile examples: catalog, inventory, reviews and
recommendations, with in-memory data.

    python examples/profiles/demo_services.py        # serves them on 127.0.0.1:9101..9104

Each is a FastAPI app (what a service built with edgeway's service kit looks like from outside);
:func:`answer` holds the logic so tests can serve the same data from their own test servers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

PORTS = {"catalog": 9101, "inventory": 9102, "reviews": 9103, "recommendations": 9104}

PRODUCTS: dict[int, dict[str, Any]] = {
    pid: {
        "id": pid,
        "name": name,
        "description": f"{name}: a fine thing, built to last, with a long description for large screens.",
        "price": price,
        "currency": "EUR",
        "thumbnail": f"https://img.example/{pid}/thumb.jpg",
        "images": [f"https://img.example/{pid}/{n}.jpg" for n in range(1, 5)],
        "specs": {"weight_g": 100 * pid, "colour": colour},
        "internal": {"supplier": f"s-{pid}", "cost": round(price * 0.6, 2)},
    }
    for pid, name, price, colour in [
        (1, "Kettle", 39.9, "steel"),
        (2, "Teapot", 24.5, "white"),
        (3, "Mug", 8.0, "blue"),
        (4, "Tea tin", 12.0, "green"),
        (5, "Strainer", 5.5, "steel"),
    ]
}
STOCK = {
    pid: {
        "product_id": pid,
        "available": pid != 4,
        "warehouses": [
            {"id": "eu-1", "region": "eu", "quantity": 0 if pid == 2 else 5 * pid},
            {"id": "us-1", "region": "us", "quantity": 3},
        ],
    }
    for pid in PRODUCTS
}
RELATED = {1: [2, 3], 2: [3, 4, 5], 3: [1, 2], 4: [2], 5: [1]}


def _reviews(pid: int, limit: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {
            "id": f"{pid}-{n}",
            "rating": 3 + (n + pid) % 3,
            "text": f"Review {n} of product {pid}: would buy again.",
        }
        for n in range(1, 13)
    ]
    return {
        "product_id": pid,
        "average": round(sum(i["rating"] for i in items) / len(items), 2),
        "count": len(items),
        "items": items[:limit],
    }


def answer(service: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    """(status, JSON body) of a GET to ``service``."""
    parts = path.strip("/").split("/")
    try:
        if service == "catalog" and parts == ["products"]:
            ids = [int(i) for i in query.get("ids", [""])[0].split(",") if i]
            return 200, [PRODUCTS[i] for i in ids if i in PRODUCTS]
        if service == "catalog" and len(parts) == 2 and parts[0] == "products":
            return 200, PRODUCTS[int(parts[1])]
        if service == "inventory" and len(parts) == 2 and parts[0] == "stock":
            return 200, STOCK[int(parts[1])]
        if service == "reviews" and len(parts) == 3 and parts[2] == "reviews":
            return 200, _reviews(int(parts[1]), int(query.get("limit", ["5"])[0]))
        if service == "recommendations" and len(parts) == 2 and parts[0] == "related":
            return 200, {"product_id": int(parts[1]), "ids": RELATED[int(parts[1])]}
    except (KeyError, ValueError):
        pass
    return 404, {"type": "about:blank", "title": "Not Found", "status": 404, "detail": f"nothing at {path}"}


def make_app(service: str) -> FastAPI:
    app = FastAPI(title=service)

    @app.get("/{path:path}")
    async def get(path: str, request: Request) -> JSONResponse:
        query: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(value)
        status, body = answer(service, "/" + path, query)
        return JSONResponse(body, status_code=status)

    return app


async def serve_all() -> None:
    import uvicorn

    servers = [
        uvicorn.Server(uvicorn.Config(make_app(name), host="127.0.0.1", port=port, log_level="warning"))
        for name, port in PORTS.items()
    ]
    await asyncio.gather(*(server.serve() for server in servers))


if __name__ == "__main__":
    asyncio.run(serve_all())
