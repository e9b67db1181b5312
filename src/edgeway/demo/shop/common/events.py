"""The shop's events and channels: one module that publishers and consumers both import.

=========== ========================================= ==========================================
channel     events                                    consumers
=========== ========================================= ==========================================
catalog     ProductChanged, PriceChanged              orders, notifications (local copies)
orders      OrderStatusChanged                        notifications (emails), BFF push
jobs        JobProgress                               BFF push (``jobs/{id}``)
users       UserChanged, UserDeleted (security svc)   profile (local copy)
=========== ========================================= ==========================================

Catalog and users events are kept forever (``ttl=None``) so a new local copy can be rebuilt from
the stream's history. Job progress is worth nothing a few minutes later, so ``jobs`` has a TTL:
when nobody consumes it, messages expire instead of piling up.
"""

from __future__ import annotations

from typing import Literal

from edgeway.bus.events import Event
from edgeway.bus.transport import ChannelConfig
from edgeway.security.events import USERS_CHANNEL, UserChanged, UserDeleted

__all__ = [
    "CHANNELS",
    "JobProgress",
    "OrderStatus",
    "OrderStatusChanged",
    "PriceChanged",
    "ProductChanged",
    "UserChanged",
    "UserDeleted",
]

OrderStatus = Literal["pending", "reserved", "paid", "confirmed", "cancelled", "failed"]


class ProductChanged(Event):
    """A product was added or edited (name, price, category...)."""

    channel = "catalog"
    event_type = "catalog.product.changed.v1"
    key_field = "sku"
    sku: str
    name: str
    price_cents: int
    category: str
    version: int


class PriceChanged(Event):
    """A product's price changed; carries the whole slim product so a copy can insert it."""

    channel = "catalog"
    event_type = "catalog.price.changed.v1"
    key_field = "sku"
    sku: str
    name: str
    price_cents: int
    previous_price_cents: int
    category: str
    version: int


class OrderStatusChanged(Event):
    """An order moved on: every step of the order saga publishes one."""

    channel = "orders"
    event_type = "orders.status.changed.v1"
    key_field = "order_id"
    order_id: str
    customer: str
    email: str | None = None
    status: OrderStatus
    total_cents: int
    reason: str | None = None
    items: list[dict[str, object]] = []


class JobProgress(Event):
    """Progress of a long job (the bulk e-mail job); pushed to clients on topic ``jobs/{id}``."""

    channel = "jobs"
    event_type = "jobs.progress.v1"
    key_field = "job_id"
    job_id: str
    owner: str
    kind: str
    done: int
    total: int
    status: Literal["queued", "running", "completed", "failed"]


CHANNELS = [
    ChannelConfig("catalog"),
    ChannelConfig("orders", retention=7 * 86_400.0),
    ChannelConfig("jobs", ttl=600.0, max_deliver=3),
    ChannelConfig(USERS_CHANNEL),
]
