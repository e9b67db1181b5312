"""The home screen for the web app and the phone app (``python.modules`` of the two BFF configs).

The web's home screen needs the categories, the products and — only for a signed-in customer —
their recent orders; the phone's shows no categories, so it does not ask for them. An aggregate
route would call the orders service for anonymous visitors too and mark their answer
incomplete; here the call is made only when there is a caller. The calls run in parallel
through the gateway's own clusters (balancing, pools, timeouts), with the request id, a child
trace context and the caller's identity headers and token.

The products (and their prices) and the categories come over gRPC when the shop's inside
transport is ``grpc`` (``EDGEWAY_INSIDE_TRANSPORT``, docs/shop.md; the route's
``options.inside_transport`` is set from it): catalog's ``ListProducts`` and ``ListCategories``,
printed as its JSON routes answer, so the screens are the same byte for byte. The orders stay
JSON: the orders service serves no gRPC.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgeway.bff import PrintOptions, Request, ServiceResponse, endpoint

__all__ = ["mobile_home", "web_home"]

PRODUCT_FIELDS = ("sku", "name", "description", "category", "price_cents")
ORDER_FIELDS = ("id", "status", "total_cents", "created_at")
CATALOG_PB = "package:edgeway.demo.shop/shop.pb"
# the JSON route's form: `.proto` names, an empty description still printed, prices as numbers
AS_JSON = PrintOptions(
    preserve_proto_field_names=True, always_print_primitive_fields=True, int64_as_numbers=True
)


def _over_grpc(req: Request) -> bool:
    return req.options.get("inside_transport") == "grpc"


def _categories(req: Request) -> Any:
    """Every category with its number of products (a list of ``name``, ``count``), over the
    inside transport; gRPC answers the list as the field ``categories`` of its message."""
    if _over_grpc(req):
        return req.services["catalog-grpc"].grpc(
            "shop.catalog.v1.Catalog/ListCategories", descriptor_set=CATALOG_PB, print_options=AS_JSON
        )
    return req.services.catalog.get("/categories")


def _products(req: Request, limit: int) -> Any:
    """The first ``limit`` products (a page: ``items``, ``total``), over the inside transport."""
    if _over_grpc(req):
        return req.services["catalog-grpc"].grpc(
            "shop.catalog.v1.Catalog/ListProducts",
            {"limit": limit},
            descriptor_set=CATALOG_PB,
            print_options=AS_JSON,
        )
    return req.services.catalog.get("/products", params={"limit": str(limit)})


async def _home(req: Request, limit: int, *, categories: bool) -> tuple[Any, Any, Any]:
    """(categories or None, products, the caller's recent orders), read at once."""
    calls: dict[str, Any] = {"products": _products(req, limit)}
    if categories:
        calls["categories"] = _categories(req)
    if req.identity is not None:
        calls["orders"] = req.services.orders.get("/orders", params={"limit": "3"})
    answers: list[ServiceResponse] = await asyncio.gather(*calls.values())
    read = {name: answer.raise_for_status().json() for name, answer in zip(calls, answers, strict=True)}
    listed = read.get("categories")
    if listed is not None and _over_grpc(req):
        listed = listed["categories"]
    return listed, read["products"]["items"], read.get("orders", [])


@endpoint("GET", "/api/home")
async def web_home(req: Request) -> dict[str, Any]:
    """The web app's home screen in one call."""
    categories, products, orders = await _home(req, limit=50, categories=True)
    return {
        "categories": categories,
        "products": [{k: p[k] for k in PRODUCT_FIELDS} for p in products],
        "orders": [{k: o[k] for k in ORDER_FIELDS} for o in orders],
    }


@endpoint("GET", "/m/home")
async def mobile_home(req: Request) -> dict[str, Any]:
    """The phone's home screen: the same data, only the fields the app shows."""
    _, products, orders = await _home(req, limit=20, categories=False)
    return {
        "products": [{"sku": p["sku"], "name": p["name"], "price": p["price_cents"]} for p in products],
        "orders": [{"id": o["id"], "status": o["status"]} for o in orders],
    }
