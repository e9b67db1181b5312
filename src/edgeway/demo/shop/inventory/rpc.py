"""Inventory over gRPC: ``shop.inventory.v1.Inventory``, beside the JSON routes.

The order saga reserves, commits and releases over this when the shop's inside transport is
``grpc`` (``EDGEWAY_INSIDE_TRANSPORT``, docs/shop.md). Each method runs the same function as its
HTTP route, so the rules are one: the caller needs the ``service`` or ``admin`` role (the orders
service's client-credentials token, in ``authorization`` metadata), a request that the HTTP route
would refuse with 422 is ``INVALID_ARGUMENT`` here, and a refusal (out of stock, released before
the reservation arrived) is ``ABORTED`` with the problem type in the ``ErrorInfo`` metadata.
"""

from __future__ import annotations

from typing import Any

import grpc
from pydantic import TypeAdapter

from edgeway.demo.shop.inventory.app import (
    InventoryService,
    Line,
    Reservation,
    ReservationIn,
    commit_reservation,
    hold,
    release_reservation,
    stock_levels,
)
from edgeway.demo.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from edgeway.service import Identity, ResourceId
from edgeway.service.errors import PermissionDeniedError
from edgeway.service.grpc import caller

__all__ = ["InventoryRpc"]

Context = grpc.aio.ServicerContext[Any, Any]
_order_id: TypeAdapter[str] = TypeAdapter(ResourceId)
# Who may reserve and release: the order saga (role ``service``), and admins fixing things.
_ROLES = frozenset({"service", "admin"})


async def _service_caller() -> Identity:
    identity = await caller()
    if _ROLES.isdisjoint(identity.roles):
        raise PermissionDeniedError(f"needs one of the roles: {', '.join(sorted(_ROLES))}")
    return identity


def _reply(reservation: Reservation) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        order_id=reservation.order_id,
        status=reservation.status,
        items=[inventory_pb2.Line(sku=line.sku, qty=line.qty) for line in reservation.items],
    )


class InventoryRpc(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, service: InventoryService) -> None:
        self.service = service

    async def Reserve(  # noqa: N802 (the contract's name)
        self, request: inventory_pb2.ReserveRequest, context: Context
    ) -> inventory_pb2.Reservation:
        await _service_caller()
        body = ReservationIn(
            order_id=request.order_id, items=[Line(sku=i.sku, qty=i.qty) for i in request.items]
        )
        reservation, _created = await hold(self.service, body)
        return _reply(reservation)

    async def Commit(  # noqa: N802
        self, request: inventory_pb2.OrderRef, context: Context
    ) -> inventory_pb2.Reservation:
        await _service_caller()
        return _reply(await commit_reservation(self.service, _order_id.validate_python(request.order_id)))

    async def Release(  # noqa: N802
        self, request: inventory_pb2.OrderRef, context: Context
    ) -> inventory_pb2.Reservation:
        await _service_caller()
        return _reply(await release_reservation(self.service, _order_id.validate_python(request.order_id)))

    async def Stock(  # noqa: N802
        self, request: inventory_pb2.StockRequest, context: Context
    ) -> inventory_pb2.StockReply:
        levels = await stock_levels(self.service, list(request.skus))
        return inventory_pb2.StockReply(
            levels=[
                inventory_pb2.StockLevel(
                    sku=s.sku, on_hand=s.on_hand, reserved=s.reserved, available=s.available
                )
                for s in levels
            ]
        )
