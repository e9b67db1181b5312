"""The order saga's calls to inventory over gRPC (``shop.inventory.v1.Inventory``), used when the
shop's inside transport is ``grpc``.

The same outcomes as the JSON calls in :mod:`edgeway.demo.shop.orders.saga`, so the saga does not
know which transport ran: each call goes through the kit's typed client (discovery, breakers,
retry of these idempotent methods on another instance), as the orders service itself (its
client-credentials token in ``authorization``), with the step's ``idempotency-key`` and request id,
and under the step's timeout as its deadline (sent as ``grpc-timeout``). A refusal (``ABORTED``
with an out-of-stock or released problem type) fails the step for good; a token refused, a peer
unreachable or broken, or the deadline passing is :class:`~edgeway.saga.RetryableError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from edgeway.demo.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from edgeway.saga import RetryableError, StepContext, StepFailed
from edgeway.service.deadline import deadline_scope
from edgeway.service.errors import DeadlineExceededError, DiscoveryError, PeerError
from edgeway.service.grpc import PeerStatusError

if TYPE_CHECKING:
    from edgeway.demo.shop.orders.app import OrdersService

__all__ = ["InventoryOverGrpc"]

R = TypeVar("R")


def reservation_dict(reply: inventory_pb2.Reservation) -> dict[str, Any]:
    """The reservation as the JSON route answers it: what the saga records as the step's result."""
    return {
        "order_id": reply.order_id,
        "status": reply.status,
        "items": [{"sku": line.sku, "qty": line.qty} for line in reply.items],
    }


class InventoryOverGrpc:
    def __init__(self, service: OrdersService) -> None:
        self.service = service

    def _stub(self) -> inventory_pb2_grpc.InventoryAsyncStub:
        return self.service.kit.grpc_client("inventory", inventory_pb2_grpc.InventoryStub)

    async def _call(
        self,
        ctx: StepContext[Any],
        method: Callable[..., Awaitable[R]],
        request: Any,
    ) -> R:
        headers = ctx.headers
        metadata = (
            ("idempotency-key", headers["Idempotency-Key"]),
            ("x-request-id", headers["X-Request-ID"]),
            ("authorization", f"Bearer {await self.service.token.token()}"),
        )
        try:
            # The step's budget becomes the call's deadline: inventory stops working on it when
            # the saga has stopped waiting.
            with deadline_scope(self.service.settings.step_timeout):
                return await method(request, metadata=metadata)
        except PeerStatusError as exc:
            if exc.code is grpc.StatusCode.UNAUTHENTICATED:
                self.service.token.forget()  # revoked or expired under us: a new one, again
                raise RetryableError("inventory refused the service token") from exc
            if exc.status >= 500:
                raise RetryableError(f"inventory answered {exc.code.name}: {exc.message}") from exc
            raise
        except (PeerError, DiscoveryError, DeadlineExceededError) as exc:
            raise RetryableError(f"inventory unreachable: {exc}") from exc

    async def reserve(self, ctx: StepContext[Any], refusals: frozenset[str]) -> dict[str, Any]:
        """Hold the order's items; a refusal whose problem type is in ``refusals`` fails the step
        (the reason written on the order), any other is tried again."""
        data = ctx.data
        request = inventory_pb2.ReserveRequest(
            order_id=data.order_id,
            items=[inventory_pb2.Line(sku=line.sku, qty=line.qty) for line in data.items],
        )
        try:
            reply = await self._call(ctx, self._stub().Reserve, request)
        except PeerStatusError as exc:
            kind = exc.metadata.get("type", "")
            if exc.code is grpc.StatusCode.ABORTED and kind in refusals:
                await self.service.set_reason(data.order_id, exc.message)
                raise StepFailed(exc.message, result={"type": kind, "detail": exc.message}) from exc
            raise RetryableError(f"inventory answered {exc.code.name}: {exc.message}") from exc
        return reservation_dict(reply)

    async def release(self, ctx: StepContext[Any]) -> dict[str, Any]:
        request = inventory_pb2.OrderRef(order_id=ctx.data.order_id)
        return reservation_dict(await self._call(ctx, self._stub().Release, request))

    async def commit(self, ctx: StepContext[Any]) -> dict[str, Any]:
        request = inventory_pb2.OrderRef(order_id=ctx.data.order_id)
        return reservation_dict(await self._call(ctx, self._stub().Commit, request))
