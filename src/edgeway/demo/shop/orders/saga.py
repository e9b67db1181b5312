"""The order saga: accept → reserve stock → charge payment → confirm.

================  ============================================  ========================================
step              action                                        compensation (in reverse order)
================  ============================================  ========================================
accept            nothing (the order exists already)            mark the order cancelled, say why
reserve           inventory ``POST /reservations``              inventory ``DELETE /reservations/{id}``
charge            payments ``POST /payments``                   payments ``POST /payments/{id}/refund``
confirm           inventory ``POST /reservations/{id}/commit``  — (after the pivot: retried until done)
================  ============================================  ========================================

``charge`` is the pivot: once the payment is captured the order only goes forward, so ``confirm``
is ``retriable`` (any failure, a step timeout included, is retried with backoff, never
compensated); compensating it could refund a payment for goods that already left.

Every remote call carries the step's ``Idempotency-Key`` (``<saga id>:<step>``) and is keyed by
the order id on the other side, so a step repeated after a timeout or a crash has its effect once,
and every compensation tolerates "nothing to undo". A business refusal (out of stock: 409;
payment declined: 402) fails the step at once (``StepFailed``); a broken or unreachable peer is
retried (``RetryableError``) within the step's budget, and so is a peer that cannot be found
for a moment (``DiscoveryError``: no instance known, or the registry unreachable). Each step
moves the order's status and publishes ``OrderStatusChanged`` through the outbox, which is what
the browser sees live.

With the shop's inside transport ``grpc`` the three inventory calls are the same over gRPC
(``Reserve``, ``Release``, ``Commit``: :mod:`edgeway.demo.shop.orders.inventory_rpc`), with the
same outcomes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from edgeway.demo.shop.common.events import OrderStatus
from edgeway.demo.shop.common.problems import PROBLEMS
from edgeway.demo.shop.orders.inventory_rpc import InventoryOverGrpc
from edgeway.saga import Backoff, Retry, RetryableError, Saga, StepContext, StepFailed
from edgeway.service.clients import PeerResponse
from edgeway.service.errors import DiscoveryError, PeerError

if TYPE_CHECKING:
    from edgeway.demo.shop.orders.app import OrdersService

__all__ = ["OrderData", "build_saga"]

# The peers' business refusals: the order cannot go on, whatever is tried again.
STOCK_REFUSALS = frozenset({PROBLEMS + "out-of-stock", PROBLEMS + "reservation-released"})
PAYMENT_REFUSALS = frozenset({PROBLEMS + "payment-declined"})


class Line(BaseModel):
    sku: str
    qty: int


class OrderData(BaseModel):
    order_id: str
    customer: str
    total_cents: int
    items: list[Line]


def build_saga(service: OrdersService) -> Saga[OrderData]:
    """The saga, its steps bound to ``service`` (its clients, token and database)."""
    saga: Saga[OrderData] = Saga("place_order", OrderData)
    # Inventory's calls over gRPC when the shop's inside transport says so (docs/shop.md);
    # payments stays JSON: one call per order, off the screen's path.
    over_grpc = service.settings.inside_transport == "grpc"
    inventory = InventoryOverGrpc(service) if over_grpc else None

    async def call(
        ctx: StepContext[OrderData], peer: str, method: str, path: str, **kwargs: Any
    ) -> PeerResponse:
        headers = {**ctx.headers, **await service.token.authorization()}
        try:
            response = await service.kit.client(peer).request(method, path, headers=headers, **kwargs)
        except (PeerError, DiscoveryError) as exc:
            # DiscoveryError covers NoInstancesError: a registry hiccup or a peer restarting is
            # transient, not the order's failure.
            raise RetryableError(f"{peer} unreachable: {exc}") from exc
        if response.status_code == 401:
            service.token.forget()  # revoked or expired under us: fetch a new one, try again
            raise RetryableError(f"{peer} refused the service token")
        if response.status_code >= 500:
            raise RetryableError(f"{peer} answered {response.status_code}")
        return response

    async def accept(ctx: StepContext[OrderData]) -> None:
        return None

    async def cancel(ctx: StepContext[OrderData]) -> None:
        await service.set_status(ctx.data.order_id, "cancelled", reason=ctx.error)

    async def advance(
        ctx: StepContext[OrderData],
        peer: str,
        path: str,
        body: dict[str, Any],
        refusal: int,
        refusals: frozenset[str],
        status: OrderStatus,
    ) -> dict[str, Any]:
        """A forward step: call, fail for good on the peer's business refusal (``refusal`` with a
        problem type in ``refusals``), else move the order."""
        response = await call(ctx, peer, "POST", path, json=body)
        if response.status_code == refusal:
            detail = _detail(response, f"{peer} refused ({refusal})")
            if _problem_type(response) not in refusals:
                # The same status for another reason (an idempotency key still being processed,
                # a conflict the peer resolves): not the business answer, so try again.
                raise RetryableError(f"{peer} answered {refusal}: {detail}")
            await service.set_reason(ctx.data.order_id, detail)
            raise StepFailed(detail, result=response.json())
        response.raise_for_status()
        await service.set_status(ctx.data.order_id, status)
        return dict(response.json())

    async def reserve(ctx: StepContext[OrderData]) -> dict[str, Any]:
        if inventory is not None:
            result = await inventory.reserve(ctx, STOCK_REFUSALS)
            await service.set_status(ctx.data.order_id, "reserved")
            return result
        body = {"order_id": ctx.data.order_id, "items": [line.model_dump() for line in ctx.data.items]}
        return await advance(ctx, "inventory", "/reservations", body, 409, STOCK_REFUSALS, "reserved")

    async def release(ctx: StepContext[OrderData]) -> None:
        if inventory is not None:
            status = (await inventory.release(ctx))["status"]
        else:
            response = await call(ctx, "inventory", "DELETE", f"/reservations/{ctx.data.order_id}")
            response.raise_for_status()
            status = response.json().get("status")
        if status == "committed":
            # Only a saga compensated before this version could get here: the stock has left,
            # so say so on the order for whoever reconciles the refund.
            await service.set_reason(
                ctx.data.order_id, f"{ctx.error}; the stock had already left (reservation committed)"
            )

    async def charge(ctx: StepContext[OrderData]) -> dict[str, Any]:
        data = ctx.data
        body = {"order_id": data.order_id, "customer": data.customer, "amount_cents": data.total_cents}
        return await advance(ctx, "payments", "/payments", body, 402, PAYMENT_REFUSALS, "paid")

    async def refund(ctx: StepContext[OrderData]) -> None:
        response = await call(ctx, "payments", "POST", f"/payments/{ctx.data.order_id}/refund")
        response.raise_for_status()

    async def confirm(ctx: StepContext[OrderData]) -> None:
        if inventory is not None:
            await inventory.commit(ctx)
        else:
            response = await call(ctx, "inventory", "POST", f"/reservations/{ctx.data.order_id}/commit")
            response.raise_for_status()
        await service.set_status(ctx.data.order_id, "confirmed")

    timeout = service.settings.step_timeout
    # Ride out a peer's restart (a few seconds) before giving up on the order: ~12 s of retries.
    retry = Retry(attempts=6, backoff=Backoff(initial=0.5, factor=2.0, maximum=4.0))
    saga.add_step("accept", accept, compensate=cancel, timeout=timeout)
    saga.add_step("reserve", reserve, compensate=release, timeout=timeout, retry=retry)
    saga.add_step("charge", charge, compensate=refund, timeout=timeout, retry=retry)
    # After the pivot: retried until inventory commits (backoff capped at 4 s), never compensated.
    saga.add_step("confirm", confirm, timeout=timeout, retry=retry, retriable=True)
    return saga


def _problem_type(response: PeerResponse) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def _detail(response: PeerResponse, default: str) -> str:
    try:
        body = response.json()
    except ValueError:
        return default
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else default
