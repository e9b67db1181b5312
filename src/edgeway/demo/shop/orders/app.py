"""Orders: ``POST /orders`` places an order and answers ``202`` while the order saga runs.

The order row, its first ``OrderStatusChanged`` event (outbox) and the saga are written in one
transaction: an order exists if and only if its saga does. Prices come from the local catalog
copy (kept by ``PriceChanged`` events), not from a call to the catalog per order. The saga
(:mod:`edgeway.demo.shop.orders.saga`) moves the status — ``pending → reserved → paid →
confirmed``, or ``cancelled`` with a reason after compensation — and each move is published, so
a client watching topic ``orders/<id>`` sees it live.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from edgeway.demo.shop.common.copies import catalog_copy, serve_copy
from edgeway.demo.shop.common.events import CHANNELS, OrderStatus, OrderStatusChanged
from edgeway.demo.shop.common.guards import sees_everything
from edgeway.demo.shop.common.problems import PROBLEMS
from edgeway.demo.shop.common.service_token import ClientCredentials
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.orders.saga import Line, OrderData, build_saga
from edgeway.resilience.breaker import BreakerPolicy
from edgeway.saga import OrchestratorConfig, SagaNotFoundError, SagaOrchestrator, SagaState
from edgeway.service import (
    REPLAYED,
    Caller,
    IdempotencyKey,
    Identity,
    Problem,
    ResourceIdPath,
    Service,
    check_replay,
    is_single_line,
    location,
    money_total,
    problem_responses,
    service_of,
)

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer", String(200), nullable=False, index=True),
    Column("email", String(320), nullable=True),
    Column("status", String(16), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("items", JSON, nullable=False),
    Column("reason", Text, nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("customer", "idempotency_key", name="uq_orders_customer_key"),
)

FINAL: frozenset[str] = frozenset({"confirmed", "cancelled", "failed"})


class OrdersSettings(ShopSettings):
    client_id: str = Field("orders-service", description="this service's OAuth client (client credentials)")
    client_secret: str = Field("orders-service-secret-01", description="its secret")
    step_timeout: float = Field(10.0, gt=0, description="seconds a saga step may take")
    saga_lease: float = Field(
        5.0, gt=0, description="seconds a saga claim holds without renewal (renewed every third of it)"
    )
    breaker_open_for: float = Field(
        5.0, gt=0, description="seconds a peer instance's circuit stays open before a probe"
    )


class LineIn(BaseModel):
    sku: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{1,31}$")
    qty: int = Field(gt=0, le=100)


class OrderIn(BaseModel):
    items: list[LineIn] = Field(min_length=1, max_length=50)


class OrderLine(BaseModel):
    sku: str
    name: str
    qty: int
    price_cents: int


class Order(BaseModel):
    id: str
    customer: str
    status: OrderStatus
    total_cents: int
    items: list[OrderLine]
    reason: str | None
    created_at: float
    updated_at: float
    topic: str


class OrdersService(Service):
    settings: OrdersSettings

    def __init__(self, settings: OrdersSettings | None = None) -> None:
        super().__init__("orders", metadata, settings or OrdersSettings.load(), channels=CHANNELS)
        s = self.settings
        self.catalog, _ = catalog_copy(self, metadata, group="orders-catalog")
        self.token = ClientCredentials(
            f"{(s.security_url or 'http://127.0.0.1:8400').rstrip('/')}/oauth/token",
            s.client_id,
            s.client_secret,
            scope="inventory payments",
        )
        self.saga = build_saga(self)
        self.orchestrator = SagaOrchestrator(
            self.db.engine,
            [self.saga],
            service="orders",
            metadata=metadata,
            config=OrchestratorConfig(lease=s.saga_lease, poll_interval=0.5, stop_grace=3.0),
            instance_id=s.instance_id or None,
            tracer=self.tracing.tracer,  # each step a span in the checkout's trace
        )
        self.on_startup(self._start)
        self.on_shutdown(self._stop)

    async def _start(self) -> None:
        # A peer that restarts comes back in seconds; the kit's default 30 s of open circuit
        # would fail every order meanwhile.
        for peer in ("inventory", "payments"):
            self.kit.client(peer).breaker_policy = BreakerPolicy(open_for=self.settings.breaker_open_for)
        if self.settings.inside_transport == "grpc":
            policy = BreakerPolicy(open_for=self.settings.breaker_open_for)
            self.kit.grpc_channel("inventory").peers.breaker_policy = policy
        await self.orchestrator.start()

    async def _stop(self) -> None:
        await self.orchestrator.stop()
        await self.token.aclose()

    async def set_status(self, order_id: str, status: OrderStatus, *, reason: str | None = None) -> None:
        """Move the order to ``status`` and publish it; a repeat (step re-run) changes nothing."""
        async with self.transaction() as session:
            row = (
                await session.execute(select(orders).where(orders.c.id == order_id).with_for_update())
            ).one()
            if row.status == status or row.status in FINAL:
                return
            why = row.reason or reason
            await session.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(status=status, reason=why, updated_at=time.time())
            )
            await self.outbox.add(session, _event(row, status, why))

    async def set_reason(self, order_id: str, reason: str) -> None:
        async with self.transaction() as session:
            await session.execute(update(orders).where(orders.c.id == order_id).values(reason=reason))


def _event(row: Any, status: OrderStatus, reason: str | None) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id=row.id,
        customer=row.customer,
        email=row.email,
        status=status,
        total_cents=row.total_cents,
        reason=reason,
        items=[{"sku": i["sku"], "name": i["name"], "qty": i["qty"]} for i in row.items],
    )


def _order(row: Any) -> Order:
    return Order(
        id=row.id,
        customer=row.customer,
        status=row.status,
        total_cents=row.total_cents,
        items=[OrderLine(**i) for i in row.items],
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        topic=f"orders/{row.id}",
    )


def _svc(request: Request) -> OrdersService:
    return service_of(request, OrdersService)


Svc = Annotated[OrdersService, Depends(_svc)]
router = APIRouter()


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    service = OrdersService(settings)
    app = service.create_app(title="orders", description="Orders, placed through a saga.")
    app.include_router(router)
    serve_copy(app, service, service.catalog)
    return app


async def _visible(svc: OrdersService, order_id: str, caller: Identity) -> Any:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(orders).where(orders.c.id == order_id))).first()
    if row is None or (row.customer != caller.subject and not sees_everything(caller)):
        raise Problem(404, f"no order {order_id}", type=PROBLEMS + "unknown-order")
    return row


@router.post("/orders", status_code=202, responses={**REPLAYED, **problem_responses(409)})
async def place_order(
    body: OrderIn,
    svc: Svc,
    caller: Caller,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Order:
    """Place an order; ``202`` with the order (status ``pending``) while its saga runs."""
    quantities: dict[str, int] = {}
    for line in body.items:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.qty
    if idempotency_key is not None:
        async with svc.db.sessions() as session:
            earlier = (
                await session.execute(
                    select(orders).where(
                        orders.c.customer == caller.subject, orders.c.idempotency_key == idempotency_key
                    )
                )
            ).first()
        if earlier is not None:
            # The first order's lines, as this request's would be (quantities summed by SKU).
            ordered = {str(i["sku"]): int(i["qty"]) for i in earlier.items}
            check_replay(idempotency_key, ordered, quantities, detail=f"order {earlier.id}")
            response.status_code = 200
            return _order(earlier)
    async with svc.db.sessions() as session:
        rows = (await session.execute(select(svc.catalog).where(svc.catalog.c.sku.in_(quantities)))).all()
    prices = {r.sku: r for r in rows}
    unknown = sorted(set(quantities) - set(prices))
    if unknown:
        raise Problem(
            422, f"unknown products: {', '.join(unknown)}", type=PROBLEMS + "unknown-product", skus=unknown
        )
    lines = [
        {"sku": sku, "name": prices[sku].name, "qty": qty, "price_cents": prices[sku].price_cents}
        for sku, qty in quantities.items()
    ]
    # Refused here, before anything is stored: a total no column or payment can hold would
    # otherwise fail the order at the insert (or later, at payments).
    total = money_total(int(line["price_cents"]) * int(line["qty"]) for line in lines)
    now = time.time()
    order_id = f"ord_{uuid.uuid4().hex[:16]}"
    email = _email(caller.claims.get("email"))
    row = {
        "id": order_id,
        "customer": caller.subject,
        "email": email,
        "status": "pending",
        "total_cents": total,
        "items": lines,
        "reason": None,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "updated_at": now,
    }
    data = OrderData(
        order_id=order_id,
        customer=caller.subject,
        total_cents=total,
        items=[Line(sku=sku, qty=qty) for sku, qty in quantities.items()],
    )
    try:
        async with svc.transaction() as session:
            await session.execute(orders.insert().values(**row))
            await svc.outbox.add(session, _event(_Row(row), "pending", None))
            await svc.orchestrator.run("place_order", data, saga_id=order_id, session=session)
    except IntegrityError as exc:  # the same Idempotency-Key raced in
        raise Problem(
            409, "an order with this Idempotency-Key is being placed", type=PROBLEMS + "duplicate"
        ) from exc
    svc.orchestrator.wake()
    response.headers["Location"] = location("orders", order_id)
    return _order(_Row(row))


def _email(value: object) -> str | None:
    """The address order e-mails go to; one that could not be put in a header is not used
    (rather than failing the notification after the order was placed)."""
    if not isinstance(value, str) or "@" not in value or len(value) > 320 or not is_single_line(value):
        return None
    return value


class _Row:
    """Attribute access over a dict, so a row about to be inserted renders like a fetched one."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


@router.get("/orders")
async def list_orders(
    svc: Svc,
    caller: Caller,
    status: OrderStatus | None = None,
    customer: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[Order]:
    """Your orders, newest first; support and admin may list anybody's (``?customer=``)."""
    query = select(orders).order_by(orders.c.created_at.desc()).limit(limit)
    if not sees_everything(caller):
        customer = caller.subject
    if customer:
        query = query.where(orders.c.customer == customer)
    if status:
        query = query.where(orders.c.status == status)
    async with svc.db.sessions() as session:
        rows = (await session.execute(query)).all()
    return [_order(r) for r in rows]


@router.get("/orders/{order_id}")
async def get_order(order_id: ResourceIdPath, svc: Svc, caller: Caller) -> Order:
    return _order(await _visible(svc, order_id, caller))


@router.get("/orders/{order_id}/saga")
async def get_order_saga(order_id: ResourceIdPath, svc: Svc, caller: Caller) -> SagaState:
    """The order's saga: each step's status, attempts, result and error."""
    await _visible(svc, order_id, caller)
    try:
        return await svc.orchestrator.get(order_id)
    except SagaNotFoundError as exc:
        raise Problem(404, f"no saga for order {order_id}") from exc
