"""Payments: ``POST /payments`` charges an order, ``POST /payments/{order_id}/refund`` gives it back.

There is no card network here: a charge is captured unless the feature flag ``payments.fail`` is
on (for everybody, for some roles, or a percentage of customers — the service kit's flag rules,
kept live from NATS KV), in which case it is declined with 402. That is how the demo and the
tests make the order saga compensate::

    edgeway demo flag payments.fail on

Both calls are idempotent, as saga steps must be: a charge is keyed by its ``Idempotency-Key``
header (the saga sends one per order and step) and by the order id, so a repeated charge returns
the first answer — a decline included — and never charges twice; a refund of a refunded, declined
or unknown payment answers what happened without doing anything.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Column, Float, MetaData, String, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.demo.shop.common.events import CHANNELS
from edgeway.demo.shop.common.guards import require_any_role, sees_everything
from edgeway.demo.shop.common.problems import PROBLEMS
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.service import (
    REPLAYED,
    Caller,
    IdempotencyKey,
    Identity,
    Money,
    Problem,
    ResourceId,
    ResourceIdPath,
    Service,
    check_replay,
    location,
    problem_responses,
    service_of,
)

metadata = MetaData()
payments = Table(
    "payments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("customer", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # captured | declined | refunded
    Column("reason", String(300), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

FAIL_FLAG = "payments.fail"
PaymentStatus = Literal["captured", "declined", "refunded"]


class Charge(BaseModel):
    # Copied into the Location header after the charge is captured: checked before it is.
    order_id: ResourceId
    customer: str = Field(min_length=1, max_length=200)
    amount_cents: Annotated[Money, Field(gt=0)]


class Payment(BaseModel):
    id: str
    order_id: str
    customer: str
    amount_cents: int
    status: PaymentStatus
    reason: str | None


class PaymentsService(Service):
    def __init__(self, settings: ShopSettings | None = None) -> None:
        super().__init__("payments", metadata, settings or ShopSettings.load(), channels=CHANNELS)

    def declines(self, customer: str, roles: frozenset[str]) -> bool:
        return self.kit.flags.enabled(FAIL_FLAG, key=customer, roles=roles)


def _svc(request: Request) -> PaymentsService:
    return service_of(request, PaymentsService)


Svc = Annotated[PaymentsService, Depends(_svc)]
ServiceCaller = Annotated[Identity, Depends(require_any_role("service", "admin"))]

router = APIRouter()


def create_app(settings: ShopSettings | None = None) -> FastAPI:
    app = PaymentsService(settings).create_app(title="payments", description="Charges and refunds.")
    app.include_router(router)
    return app


def _payment(row: Any) -> Payment:
    return Payment.model_validate(row, from_attributes=True)


def _answer(payment: Payment) -> Payment:
    if payment.status == "declined":
        raise Problem(
            402,
            payment.reason or "the payment was declined",
            title="Payment Declined",
            type=PROBLEMS + "payment-declined",
            payment_id=payment.id,
            order_id=payment.order_id,
        )
    return payment


async def _by(
    session: AsyncSession, *, order_id: str | None = None, key: str | None = None
) -> Payment | None:
    query = select(payments)
    query = (
        query.where(payments.c.order_id == order_id)
        if order_id
        else query.where(payments.c.idempotency_key == key)
    )
    row = (await session.execute(query.with_for_update())).first()
    return _payment(row) if row is not None else None


@router.post("/payments", status_code=201, responses={**REPLAYED, **problem_responses(402)})
async def charge(
    body: Charge,
    svc: Svc,
    caller: ServiceCaller,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Payment:
    key = idempotency_key or f"order:{body.order_id}"
    async with svc.db.sessions() as session:
        earlier = await _by(session, key=key) or await _by(session, order_id=body.order_id)
    if earlier is not None:
        check_replay(
            key,
            (earlier.order_id, earlier.amount_cents),
            (body.order_id, body.amount_cents),
            detail=f"a charge of order {earlier.order_id}",
        )
        response.status_code = 200
        return _answer(earlier)
    declined = svc.declines(body.customer, caller.roles)
    now = time.time()
    payment = Payment(
        id=f"pay_{uuid.uuid4().hex[:20]}",
        order_id=body.order_id,
        customer=body.customer,
        amount_cents=body.amount_cents,
        status="declined" if declined else "captured",
        reason=f"declined: the {FAIL_FLAG} flag is on" if declined else None,
    )
    try:
        async with svc.transaction() as session:
            await session.execute(
                payments.insert().values(
                    **payment.model_dump(), idempotency_key=key, created_at=now, updated_at=now
                )
            )
    except IntegrityError:
        # The same charge raced in through another connection: answer what won.
        async with svc.db.sessions() as session:
            winner = await _by(session, order_id=body.order_id)
        if winner is None:
            raise
        response.status_code = 200
        return _answer(winner)
    response.headers["Location"] = location("payments", body.order_id)
    return _answer(payment)


@router.post("/payments/{order_id}/refund")
async def refund(order_id: ResourceIdPath, svc: Svc, _caller: ServiceCaller) -> Payment | dict[str, str]:
    """Compensation: refund a captured payment; anything else is already as good as refunded."""
    async with svc.transaction() as session:
        found = await _by(session, order_id=order_id)
        if found is None:
            return {"order_id": order_id, "status": "nothing to refund"}
        if found.status != "captured":
            return found
        await session.execute(
            update(payments)
            .where(payments.c.order_id == order_id)
            .values(status="refunded", updated_at=time.time())
        )
    return found.model_copy(update={"status": "refunded"})


@router.get("/payments/{order_id}")
async def get_payment(order_id: ResourceIdPath, svc: Svc, caller: Caller) -> Payment:
    async with svc.db.sessions() as session:
        row = (await session.execute(select(payments).where(payments.c.order_id == order_id))).first()
    if row is None or (
        row.customer != caller.subject and not sees_everything(caller) and "service" not in caller.roles
    ):
        raise Problem(404, f"no payment for order {order_id}")
    return _payment(row)
