"""The slim local copy of the catalog that orders and notifications keep.

Orders prices a new order from it and notifications names the items in its e-mails, so neither
calls the catalog per request; a price change reaches both within moments through
``PriceChanged``. The ``version`` column makes an older event (a redelivery, a retry arriving
late) unable to overwrite a newer price.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, select

from edgeway.bus.readcopy import ReadCopy
from edgeway.demo.shop.common.events import PriceChanged, ProductChanged
from edgeway.service import Problem, Service

__all__ = ["catalog_copy", "fill_if_empty", "serve_copy"]

log = logging.getLogger("shop.copies")


def catalog_copy(service: Service, metadata: MetaData, *, group: str) -> tuple[Table, ReadCopy]:
    """The copy's table in ``metadata`` and the read copy, subscribed on the service's bus."""
    existing = metadata.tables.get("catalog_copy")
    table = (
        existing
        if existing is not None
        else Table(
            "catalog_copy",
            metadata,
            Column("sku", String(32), primary_key=True),
            Column("name", String(200), nullable=False),
            Column("category", String(64), nullable=False),
            Column("price_cents", BigInteger, nullable=False),
            Column("version", Integer, nullable=False),
        )
    )
    copy = ReadCopy(service.db.sessions, table, key="sku", version="version")

    @copy.upsert(ProductChanged)
    def _product(e: ProductChanged) -> dict[str, Any]:
        return _row(e)

    @copy.upsert(PriceChanged)
    def _price(e: PriceChanged) -> dict[str, Any]:
        return _row(e)

    copy.attach(service.bus, group=group)
    fill_if_empty(service, copy)
    return table, copy


def fill_if_empty(service: Service, copy: ReadCopy) -> None:
    """At start, rebuild an empty copy from the channel's history.

    On NATS a new consumer group starts at the beginning of the stream anyway; on RabbitMQ a
    group's queue only gets what is published after it exists, so a copy created after the
    catalog was seeded would stay empty without this. Both ways are idempotent (versions).
    """

    async def fill() -> None:
        async with service.db.sessions() as session:
            if await session.scalar(select(func.count()).select_from(copy.table)):
                return
        applied = await copy.rebuild(service.bus)
        log.info("local copy %s rebuilt from the stream: %d events", copy.table.name, applied)

    service.on_startup(fill)


def _row(e: ProductChanged | PriceChanged) -> dict[str, Any]:
    return {
        "sku": e.sku,
        "name": e.name,
        "category": e.category,
        "price_cents": e.price_cents,
        "version": e.version,
    }


def serve_copy(app: FastAPI, service: Service, table: Table) -> None:
    """``GET /catalog-copy/{sku}``: what this service's copy holds (to watch a price change arrive)."""

    @app.get("/catalog-copy/{sku}", tags=["local copy"])
    async def catalog_copy_row(sku: str) -> dict[str, Any]:
        async with service.db.sessions() as session:
            row = (await session.execute(select(table).where(table.c.sku == sku))).first()
        if row is None:
            raise Problem(404, f"{sku} is not in the local catalog copy (yet)")
        return dict(row._mapping)
