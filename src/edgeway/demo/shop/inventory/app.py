"""Inventory: stock levels and reservations.

A reservation holds stock for one order, all lines or none. It is keyed by the order id, which
makes every call idempotent — the order saga may repeat any of them after a timeout or a crash:

=============================================  ===============================================
``POST /reservations``                         hold the items (``201``); again: the same answer
``POST /reservations/{order_id}/commit``       the order is confirmed: the stock leaves
``DELETE /reservations/{order_id}``            compensation: give the stock back
=============================================  ===============================================

The same calls are served over gRPC (``shop.inventory.v1.Inventory``: :mod:`.rpc`) for the order
saga when the shop's inside transport is ``grpc``; both run the functions below.

A release that arrives before its reservation (the reserve call timed out, the saga compensated,
then the late request landed) leaves a ``released`` tombstone, so the late reserve is refused
instead of holding stock for a cancelled order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import JSON, Column, Float, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.demo.shop.common.demo_data import PRODUCTS
from edgeway.demo.shop.common.events import CHANNELS
from edgeway.demo.shop.common.guards import require_any_role
from edgeway.demo.shop.common.problems import PROBLEMS
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.service import (
    REPLAYED,
    Count,
    Identity,
    Problem,
    ResourceId,
    ResourceIdPath,
    Service,
    location,
    problem_responses,
    service_of,
)

metadata = MetaData()
stock = Table(
    "stock",
    metadata,
    Column("sku", String(32), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)
reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # held | committed | released
    Column("items", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

ReservationStatus = Literal["held", "committed", "released"]


class Stock(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int


# Stock rows are keyed by the catalog's SKUs; a path or body naming another shape could only
# fail in the database (longer than the column) after the request was accepted.
SKU = r"^[A-Z0-9][A-Z0-9-]{1,31}$"
Sku = Annotated[str, Field(pattern=SKU)]
SkuPath = Annotated[str, Path(pattern=SKU)]


class Line(BaseModel):
    sku: Sku
    qty: int = Field(gt=0, le=1000)


class ReservationIn(BaseModel):
    # Copied into the Location header and the path of the later calls: checked before anything
    # is reserved, so an id that cannot be put in a header can never leave stock held.
    order_id: ResourceId
    items: list[Line] = Field(min_length=1, max_length=50)


class Reservation(BaseModel):
    order_id: str
    status: ReservationStatus
    items: list[Line]


class StockLevel(BaseModel):
    on_hand: Count


class InventoryService(Service):
    def __init__(self, settings: ShopSettings | None = None) -> None:
        super().__init__("inventory", metadata, settings or ShopSettings.load(), channels=CHANNELS)
        self.on_startup(self.seed)

    async def seed(self) -> None:
        try:
            async with self.transaction() as session:
                if await session.scalar(select(func.count()).select_from(stock)):
                    return
                now = time.time()
                await session.execute(
                    stock.insert(),
                    [{"sku": p.sku, "on_hand": p.stock, "reserved": 0, "updated_at": now} for p in PRODUCTS],
                )
        except IntegrityError:
            pass


def _svc(request: Request) -> InventoryService:
    return service_of(request, InventoryService)


Svc = Annotated[InventoryService, Depends(_svc)]
# Reservations are made by the order saga with the orders service's own (client credentials)
# token; staff may look and fix.
ServiceCaller = Annotated[Identity, Depends(require_any_role("service", "admin"))]
Staff = Annotated[Identity, Depends(require_any_role("service", "support", "admin"))]
Admin = Annotated[Identity, Depends(require_any_role("admin"))]

router = APIRouter()


def create_app(settings: ShopSettings | None = None) -> FastAPI:
    from edgeway.demo.shop.inventory.rpc import InventoryRpc

    service = InventoryService(settings)
    # gRPC beside HTTP (served when EDGEWAY_GRPC_PORT is set): the order saga's calls, the same
    # functions behind both (docs/shop.md).
    app = service.create_app(
        title="inventory", description="Stock and reservations.", grpc=[InventoryRpc(service)]
    )
    app.include_router(router)
    return app


def _stock(row: Any) -> Stock:
    return Stock(
        sku=row.sku, on_hand=row.on_hand, reserved=row.reserved, available=row.on_hand - row.reserved
    )


def _reservation(row: Any) -> Reservation:
    return Reservation(order_id=row.order_id, status=row.status, items=[Line(**i) for i in row.items])


async def _find(session: AsyncSession, order_id: str, *, lock: bool = False) -> Reservation | None:
    query = select(reservations).where(reservations.c.order_id == order_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return _reservation(row) if row is not None else None


async def stock_levels(svc: InventoryService, skus: Sequence[str] = ()) -> list[Stock]:
    """The stock of ``skus`` (every SKU when empty), by SKU."""
    query = select(stock).order_by(stock.c.sku)
    if skus:
        query = query.where(stock.c.sku.in_(skus))
    async with svc.db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [_stock(r) for r in rows]


@router.get("/stock")
async def list_stock(svc: Svc) -> list[Stock]:
    return await stock_levels(svc)


@router.get("/stock/{sku}")
async def get_stock(sku: SkuPath, svc: Svc) -> Stock:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(stock).where(stock.c.sku == sku))).first()
    if row is None:
        raise Problem(404, f"no stock record for {sku}", type=PROBLEMS + "unknown-product")
    return _stock(row)


@router.put("/stock/{sku}", responses=problem_responses(409))
async def set_stock(sku: SkuPath, body: StockLevel, svc: Svc, _admin: Admin) -> Stock:
    async with svc.transaction() as session:
        row = (await session.execute(select(stock).where(stock.c.sku == sku).with_for_update())).first()
        if row is None:
            await session.execute(
                stock.insert().values(sku=sku, on_hand=body.on_hand, reserved=0, updated_at=time.time())
            )
            return Stock(sku=sku, on_hand=body.on_hand, reserved=0, available=body.on_hand)
        if body.on_hand < row.reserved:
            raise Problem(409, f"{row.reserved} units of {sku} are reserved; on_hand cannot go below that")
        await session.execute(
            update(stock).where(stock.c.sku == sku).values(on_hand=body.on_hand, updated_at=time.time())
        )
    return Stock(sku=sku, on_hand=body.on_hand, reserved=row.reserved, available=body.on_hand - row.reserved)


@router.post("/reservations", status_code=201, responses={**REPLAYED, **problem_responses(409)})
async def reserve(body: ReservationIn, svc: Svc, _caller: ServiceCaller, response: Response) -> Reservation:
    reservation, created = await hold(svc, body)
    if created:
        response.headers["Location"] = location("reservations", body.order_id)
    else:
        response.status_code = 200  # a repeat: the same answer, nothing held twice
    return reservation


async def hold(svc: InventoryService, body: ReservationIn) -> tuple[Reservation, bool]:
    """Reserve the order's items, all or none; with whether this call made the reservation
    (False: a repeat, answered with the reservation as it is). Refusals are 409 problems."""
    wanted: dict[str, int] = {}
    for line in body.items:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    async with svc.transaction() as session:
        existing = await _find(session, body.order_id, lock=True)
        if existing is not None:
            if existing.status == "released":
                raise Problem(
                    409,
                    f"order {body.order_id} was released (cancelled) before this reservation arrived",
                    type=PROBLEMS + "reservation-released",
                )
            return existing, False
        rows = {
            r.sku: r
            for r in (
                await session.execute(select(stock).where(stock.c.sku.in_(wanted)).with_for_update())
            ).all()
        }
        shortages: list[dict[str, Any]] = [
            {
                "sku": sku,
                "wanted": qty,
                "available": (rows[sku].on_hand - rows[sku].reserved) if sku in rows else 0,
            }
            for sku, qty in wanted.items()
            if sku not in rows or rows[sku].on_hand - rows[sku].reserved < qty
        ]
        if shortages:
            raise Problem(
                409,
                "not enough stock for " + ", ".join(str(s["sku"]) for s in shortages),
                type=PROBLEMS + "out-of-stock",
                shortages=shortages,
            )
        now = time.time()
        for sku, qty in wanted.items():
            await session.execute(
                update(stock)
                .where(stock.c.sku == sku)
                .values(reserved=stock.c.reserved + qty, updated_at=now)
            )
        items = [{"sku": sku, "qty": qty} for sku, qty in wanted.items()]
        await session.execute(
            reservations.insert().values(
                order_id=body.order_id, status="held", items=items, created_at=now, updated_at=now
            )
        )
    return Reservation(order_id=body.order_id, status="held", items=[Line(**i) for i in items]), True


@router.get("/reservations/{order_id}")
async def get_reservation(order_id: ResourceIdPath, svc: Svc, _caller: Staff) -> Reservation:
    async with svc.db.sessions() as session:
        found = await _find(session, order_id)
    if found is None:
        raise Problem(404, f"no reservation for order {order_id}")
    return found


@router.post("/reservations/{order_id}/commit", responses=problem_responses(409))
async def commit(order_id: ResourceIdPath, svc: Svc, _caller: ServiceCaller) -> Reservation:
    """The order is confirmed: the held units leave the warehouse."""
    return await commit_reservation(svc, order_id)


async def commit_reservation(svc: InventoryService, order_id: str) -> Reservation:
    """The held units of ``order_id`` leave; a repeat answers the committed reservation."""
    async with svc.transaction() as session:
        found = await _find(session, order_id, lock=True)
        if found is None:
            raise Problem(404, f"no reservation for order {order_id}")
        if found.status == "committed":
            return found
        if found.status == "released":
            raise Problem(
                409, f"the reservation of order {order_id} was released", type=PROBLEMS + "released"
            )
        await _move(session, found, on_hand=-1, reserved=-1)
        await _set_status(session, order_id, "committed")
    return found.model_copy(update={"status": "committed"})


@router.delete("/reservations/{order_id}")
async def release(order_id: ResourceIdPath, svc: Svc, _caller: ServiceCaller) -> Reservation:
    """Compensation: give held stock back. Idempotent, and safe before the reservation exists.

    A committed reservation cannot be released (its stock has left): the answer is 200 with the
    reservation as it is, ``status: committed``, a definite outcome the caller acts on, not a
    conflict it would try again forever."""
    return await release_reservation(svc, order_id)


async def release_reservation(svc: InventoryService, order_id: str) -> Reservation:
    """Give the held stock of ``order_id`` back (see :func:`release`)."""
    async with svc.transaction() as session:
        found = await _find(session, order_id, lock=True)
        if found is None:
            now = time.time()
            await session.execute(
                reservations.insert().values(
                    order_id=order_id, status="released", items=[], created_at=now, updated_at=now
                )
            )
            return Reservation(order_id=order_id, status="released", items=[])
        if found.status == "committed":
            return found
        if found.status == "held":
            await _move(session, found, on_hand=0, reserved=-1)
            await _set_status(session, order_id, "released")
    return found.model_copy(update={"status": "released"})


async def _move(session: AsyncSession, reservation: Reservation, *, on_hand: int, reserved: int) -> None:
    now = time.time()
    for line in reservation.items:
        await session.execute(
            update(stock)
            .where(stock.c.sku == line.sku)
            .values(
                on_hand=stock.c.on_hand + on_hand * line.qty,
                reserved=stock.c.reserved + reserved * line.qty,
                updated_at=now,
            )
        )


async def _set_status(session: AsyncSession, order_id: str, status: ReservationStatus) -> None:
    await session.execute(
        update(reservations)
        .where(reservations.c.order_id == order_id)
        .values(status=status, updated_at=time.time())
    )
