"""The catalog's reads over gRPC: ``shop.catalog.v1.Catalog``, beside the JSON routes.

The BFFs read the product page's product, the product list and the home screens' products and
categories over this when the shop's inside transport is ``grpc`` (``EDGEWAY_INSIDE_TRANSPORT``,
docs/shop.md), through the gateway's JSON-to-gRPC transcoding. Each method runs the same function
as its HTTP route and checks its request by the route's rules: what the route refuses with 422 is
``INVALID_ARGUMENT`` here, an unknown SKU ``NOT_FOUND`` with the problem's ``type`` in the
``ErrorInfo`` metadata. Reads are public, as the routes are: no identity is asked for.
"""

from __future__ import annotations

from typing import Annotated, Any

import grpc
from pydantic import BaseModel, Field

from edgeway.demo.shop.catalog.app import (
    SKU,
    CatalogService,
    Product,
    category_counts,
    find_product,
    product_page,
)
from edgeway.demo.shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from edgeway.service import Cursor

__all__ = ["CatalogRpc"]

Context = grpc.aio.ServicerContext[Any, Any]


class _ProductRef(BaseModel):
    sku: Annotated[str, Field(pattern=SKU)]


class _PageQuery(BaseModel):
    """``GET /products``'s query rules, for the request message (proto3's empty means absent)."""

    category: str | None
    q: Annotated[str | None, Field(max_length=100)]
    limit: Annotated[int, Field(ge=1, le=100)]
    offset: Cursor


def _product(product: Product) -> catalog_pb2.Product:
    return catalog_pb2.Product(**product.model_dump())


class CatalogRpc(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, service: CatalogService) -> None:
        self.service = service

    async def GetProduct(  # noqa: N802 (the contract's name)
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.Product:
        ref = _ProductRef(sku=request.sku)
        return _product(await find_product(self.service, ref.sku))

    async def ListProducts(  # noqa: N802
        self, request: catalog_pb2.ListProductsRequest, context: Context
    ) -> catalog_pb2.ProductPage:
        query = _PageQuery(
            category=request.category or None,
            q=request.q or None,
            limit=request.limit if request.HasField("limit") else 50,
            offset=request.offset,
        )
        page = await product_page(self.service, query.category, query.q, query.limit, query.offset)
        return catalog_pb2.ProductPage(items=[_product(p) for p in page.items], total=page.total)

    async def ListCategories(  # noqa: N802
        self, request: catalog_pb2.ListCategoriesRequest, context: Context
    ) -> catalog_pb2.CategoryList:
        found = await category_counts(self.service)
        return catalog_pb2.CategoryList(categories=[catalog_pb2.Category(**c.model_dump()) for c in found])
