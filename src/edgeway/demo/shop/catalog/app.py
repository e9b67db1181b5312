"""Catalog: ``GET /products``, ``GET /products/{sku}``, ``GET /categories`` (public), and the
admin's ``POST /products`` and ``PUT /products/{sku}/price``.

The reads are served over gRPC too (``shop.catalog.v1.Catalog``: :mod:`.rpc`) for the BFFs when
the shop's inside transport is ``grpc``; both run the functions below.

Every change bumps the product's ``version`` and writes its event into the outbox in the same
transaction, so a local copy elsewhere is never ahead of or behind the catalog for long, and
never lets an older event overwrite a newer one.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware.base import RequestResponseEndpoint

from edgeway.demo.shop.common.demo_data import PRODUCTS
from edgeway.demo.shop.common.events import CHANNELS, PriceChanged, ProductChanged
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.service import (
    Cursor,
    Identity,
    Money,
    Problem,
    Service,
    location,
    problem_responses,
    require_roles,
    service_of,
)

metadata = MetaData()
products = Table(
    "products",
    metadata,
    Column("sku", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("category", String(64), nullable=False, index=True),
    Column("price_cents", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

SKU = r"^[A-Z0-9][A-Z0-9-]{1,31}$"
SkuPath = Annotated[str, Path(pattern=SKU)]


class Product(BaseModel):
    sku: str
    name: str
    description: str
    category: str
    price_cents: int
    version: int


class ProductPage(BaseModel):
    items: list[Product]
    total: int


class Category(BaseModel):
    name: str
    count: int


class NewProduct(BaseModel):
    sku: str = Field(pattern=SKU)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    category: str = Field(min_length=1, max_length=64)
    price_cents: Annotated[Money, Field(gt=0)]


class NewPrice(BaseModel):
    price_cents: Annotated[Money, Field(gt=0, description="the new price in cents")]


class CatalogService(Service):
    def __init__(self, settings: ShopSettings | None = None) -> None:
        super().__init__("catalog", metadata, settings or ShopSettings.load(), channels=CHANNELS)
        self.on_startup(self.seed)

    async def seed(self) -> None:
        """Fill an empty catalog with the demo products (and publish them)."""
        try:
            async with self.transaction() as session:
                if await session.scalar(select(func.count()).select_from(products)):
                    return
                now = time.time()
                for p in PRODUCTS:
                    row = {
                        "sku": p.sku,
                        "name": p.name,
                        "description": p.description,
                        "category": p.category,
                        "price_cents": p.price_cents,
                        "version": 1,
                        "updated_at": now,
                    }
                    await session.execute(products.insert().values(**row))
                    await self.outbox.add(session, _product_changed(row))
        except IntegrityError:
            pass  # the other instance seeded the shared database first

    @property
    def served_by(self) -> str:
        return self.settings.instance_id or f"catalog:{self.settings.port}"


def _svc(request: Request) -> CatalogService:
    return service_of(request, CatalogService)


Svc = Annotated[CatalogService, Depends(_svc)]
Admin = Annotated[Identity, Depends(require_roles("admin"))]


def _product_changed(row: dict[str, object]) -> ProductChanged:
    return ProductChanged.model_validate(row)


def _product(row: object) -> Product:
    return Product.model_validate(row, from_attributes=True)


async def _load(session: AsyncSession, sku: str, *, for_update: bool = False) -> Product:
    query = select(products).where(products.c.sku == sku)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise Problem(404, f"no product {sku}", type="https://shop.edgeway.example/problems/unknown-product")
    return _product(row)


router = APIRouter()


def create_app(settings: ShopSettings | None = None) -> FastAPI:
    from edgeway.demo.shop.catalog.rpc import CatalogRpc

    service = CatalogService(settings)
    # gRPC beside HTTP (served when EDGEWAY_GRPC_PORT is set): the BFFs' product reads, the same
    # functions behind both (docs/shop.md).
    app = service.create_app(title="catalog", description="Products and prices.", grpc=[CatalogRpc(service)])

    @app.middleware("http")
    async def served_by(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Served-By"] = service.served_by
        return response

    app.include_router(router)
    return app


@router.get("/products")
async def list_products(
    svc: Svc,
    category: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[Cursor, Query()] = 0,
) -> ProductPage:
    return await product_page(svc, category, q, limit, offset)


async def product_page(
    svc: CatalogService, category: str | None, q: str | None, limit: int, offset: int
) -> ProductPage:
    """Products by SKU, ``limit`` from ``offset``, of a category and/or with ``q`` in the name
    (checked by the caller: the route's query, or the gRPC method's request)."""
    query = select(products)
    if category:
        query = query.where(products.c.category == category)
    if q:
        query = query.where(products.c.name.ilike(f"%{q}%"))
    async with svc.db.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (await session.execute(query.order_by(products.c.sku).limit(limit).offset(offset))).all()
    return ProductPage(items=[_product(r) for r in rows], total=int(total or 0))


@router.get("/products/{sku}")
async def get_product(sku: SkuPath, svc: Svc) -> Product:
    return await find_product(svc, sku)


async def find_product(svc: CatalogService, sku: str) -> Product:
    """The product ``sku``; a 404 problem (``unknown-product``) when there is none."""
    async with svc.db.sessions() as session:
        return await _load(session, sku)


@router.get("/categories")
async def categories(svc: Svc) -> list[Category]:
    return await category_counts(svc)


async def category_counts(svc: CatalogService) -> list[Category]:
    """Every category with its number of products, by name (the route's and the gRPC method's)."""
    query = (
        select(products.c.category, func.count()).group_by(products.c.category).order_by(products.c.category)
    )
    async with svc.db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [Category(name=name, count=count) for name, count in rows]


@router.post("/products", status_code=201, responses=problem_responses(409))
async def add_product(body: NewProduct, svc: Svc, _admin: Admin, response: Response) -> Product:
    row = {**body.model_dump(), "version": 1, "updated_at": time.time()}
    try:
        async with svc.transaction() as session:
            await session.execute(products.insert().values(**row))
            await svc.outbox.add(session, _product_changed(row))
    except IntegrityError as exc:
        raise Problem(409, f"product {body.sku} exists already") from exc
    response.headers["Location"] = location("products", body.sku)
    return Product.model_validate(row)


@router.put("/products/{sku}/price")
async def set_price(sku: SkuPath, body: NewPrice, svc: Svc, _admin: Admin) -> Product:
    async with svc.transaction() as session:
        before = await _load(session, sku, for_update=True)
        version = before.version + 1
        await session.execute(
            update(products)
            .where(products.c.sku == sku)
            .values(price_cents=body.price_cents, version=version, updated_at=time.time())
        )
        await svc.outbox.add(
            session,
            PriceChanged(
                sku=sku,
                name=before.name,
                category=before.category,
                price_cents=body.price_cents,
                previous_price_cents=before.price_cents,
                version=version,
            ),
        )
    return before.model_copy(update={"price_cents": body.price_cents, "version": version})
