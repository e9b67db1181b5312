"""The rehearsal's figures, computed from what was recorded: no sockets, no clocks of its own.

Inputs: the client's operations (:class:`Op`), the consumers' deliveries (:class:`Delivery`: the
probe's as received, notifications' from its inbox table), the faults' timeline (:class:`Fault`)
and what the databases hold after the run (:class:`Facts`). All times are seconds on the run's
one clock.

- ``lost_events``: order events the orders service wrote (its outbox, channel ``orders``) that a
  consumer never got, by event id; the consumers are notifications (its inbox) and the probe.
- ``duplicate_effects``: effects that happened twice — an order placed twice for one
  Idempotency-Key, a second charge for an order, stock units moved more than the committed
  reservations account for, an e-mail delivered twice.
- ``error_rate``: failed client operations (after the client's retries across both gateways)
  over all operations that started during a fault or within :data:`RECOVERY_TARGET_S` after it
  (after its restarted processes were ready, when that came later).
- ``recovery_s``: per fault, the time from its end (the restart issued, the link up) until
  requests and events flow normally again: the end of the last abnormal request (failed, or
  slower than the baseline allows) or abnormal order (its final event late, missing at a
  consumer, or the order cancelled) attributed to that fault. An item belongs to the latest
  fault that had begun when it ended; an order whose final event never came leaves the fault
  unrecovered (None). "Normal" comes from the operations before the first fault: three times
  their p99, never less than :data:`REQUEST_FLOOR_S` / :data:`EVENT_FLOOR_S`. A request that
  succeeded on its second gateway within that time is normal — riding over a dead gateway is
  what the client's retries are for — and is reported apart (``retried_until_s``).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECOVERY_TARGET_S = 5.0
ERROR_RATE_TARGET = 0.001
# What "normal" may cost at most, whatever the baseline says: a busy 2-core machine has a slow
# request now and then, and that is not a fault still being felt.
REQUEST_FLOOR_S = {"checkout": 1.5, "read": 1.0}
EVENT_FLOOR_S = 2.0
BASELINE_FACTOR = 3.0
FINAL = ("confirmed", "cancelled")


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation, however many attempts it took."""

    kind: str  # checkout | read
    start: float
    end: float
    ok: bool
    attempts: int = 1
    status: int = 0  # the last HTTP status; 0 when the last attempt got no answer
    order_id: str | None = None
    key: str = ""  # the checkout's Idempotency-Key
    order_ids: tuple[str, ...] = ()  # every order id answered for this key
    error: str = ""
    trail: tuple[str, ...] = ()  # each attempt: gateway, outcome, seconds

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Delivery:
    """An order event as a consumer received it (the probe) or recorded it (an inbox)."""

    consumer: str
    event_id: str
    order_id: str
    status: str
    at: float


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    start: float
    end: float  # when it was undone: restart issued, link up
    back_s: float | None = None  # from the end until the restarted processes were ready


@dataclass
class Facts:
    """What the services stored, read after the run."""

    orders: list[tuple[str, str, str | None]]  # id, status, idempotency key
    published: list[tuple[str, str, str, float | None]]  # event id, order id, status, sent_at
    stock: dict[str, tuple[int, int]]  # sku -> on_hand, reserved
    initial_stock: dict[str, int]
    reservations: list[tuple[str, str, list[tuple[str, int]]]]  # order id, status, (sku, qty)
    payments: list[tuple[str, str]]  # order id, status
    consumed: dict[str, dict[str, float]] = field(default_factory=dict)  # consumer -> event id -> when
    emails: list[str] = field(default_factory=list)  # maildir keys, one per file


# --------------------------------------------------------------------------- events


def consumer_deliveries(facts: Facts) -> list[Delivery]:
    """The consumers' records as deliveries (order and status from the published event)."""
    published = {event_id: (order_id, status) for event_id, order_id, status, _sent in facts.published}
    out = []
    for consumer, seen in facts.consumed.items():
        for event_id, at in seen.items():
            order_id, status = published.get(event_id, ("", ""))
            out.append(Delivery(consumer, event_id, order_id, status, at))
    return out


def lost_events(facts: Facts, deliveries: Sequence[Delivery], consumers: Sequence[str]) -> dict[str, Any]:
    """Published order events some consumer never got, by id (and the sanity counts around it)."""
    published = {p[0] for p in facts.published}
    got: dict[str, set[str]] = {name: set() for name in consumers}
    received: Counter[str] = Counter()
    for d in deliveries:
        got.setdefault(d.consumer, set()).add(d.event_id)
        received[d.consumer] += 1
    missing = {name: published - ids for name, ids in got.items()}
    lost: set[str] = set().union(*missing.values()) if missing else set()
    return {
        "lost": len(lost),
        "published": len(published),
        "unsent": sum(1 for p in facts.published if p[3] is None),
        "missing_by_consumer": {name: len(ids) for name, ids in missing.items()},
        "unknown_by_consumer": {name: len(ids - published) for name, ids in got.items()},
        "received_twice_by_consumer": {name: received[name] - len(got[name]) for name in got},
        "lost_ids": sorted(lost)[:20],
    }


# --------------------------------------------------------------------------- effects


def duplicate_effects(facts: Facts, ops: Sequence[Op]) -> dict[str, int]:
    keys = Counter(key for _id, _status, key in facts.orders if key)
    orders_twice = sum(n - 1 for n in keys.values() if n > 1)
    client_two_orders = sum(1 for op in ops if len(set(op.order_ids)) > 1)
    charges = Counter(order_id for order_id, _status in facts.payments)
    charged_twice = sum(n - 1 for n in charges.values() if n > 1)
    moved_twice = sum(
        max(0, -on_hand) + max(0, reserved) for on_hand, reserved in _stock_drift(facts).values()
    )
    mails = Counter(facts.emails)
    mailed_twice = sum(n - 1 for n in mails.values() if n > 1)
    effects = {
        "orders_twice": orders_twice,
        "client_saw_two_orders": client_two_orders,
        "charged_twice": charged_twice,
        "stock_units_moved_twice": moved_twice,
        "emails_twice": mailed_twice,
    }
    effects["total"] = sum(effects.values())
    return effects


def _stock_drift(facts: Facts) -> dict[str, tuple[int, int]]:
    """Per SKU, (on-hand units minus initial stock less the committed reservations, reserved
    units minus the held reservations): (0, 0) when every move happened once. A negative first
    or a positive second number is stock moved (or held) more often than the orders explain."""
    committed: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for _order, status, items in facts.reservations:
        for sku, qty in items:
            if status == "committed":
                committed[sku] += qty
            elif status == "held":
                held[sku] += qty
    return {
        sku: (on_hand - (facts.initial_stock.get(sku, on_hand) - committed[sku]), reserved - held[sku])
        for sku, (on_hand, reserved) in facts.stock.items()
    }


def consistency(facts: Facts, ops: Sequence[Op]) -> dict[str, int]:
    """Orders whose three services disagree after the run (not duplicates, but worth knowing)."""
    placed = {op.order_id for op in ops if op.kind == "checkout" and op.order_id}
    status = {order_id: s for order_id, s, _key in facts.orders}
    paid = dict(facts.payments)
    reserved = {order_id: s for order_id, s, _items in facts.reservations}
    shipped_unpaid = sum(
        1 for order_id, r in reserved.items() if r == "committed" and paid.get(order_id) != "captured"
    )
    confirmed_unpaid = cancelled_but_charged = confirmed_not_committed = 0
    for order_id, s in status.items():
        if s == "confirmed":
            confirmed_unpaid += paid.get(order_id) != "captured"
            confirmed_not_committed += reserved.get(order_id) != "committed"
        elif s == "cancelled":
            cancelled_but_charged += paid.get(order_id) == "captured"
    return {
        "placed": len(placed),
        "missing_orders": len(placed - status.keys()),
        "unfinished": sum(1 for order_id in placed if status.get(order_id) not in FINAL),
        "cancelled": sum(1 for order_id in placed if status.get(order_id) == "cancelled"),
        "confirmed_unpaid": confirmed_unpaid,
        "confirmed_not_committed": confirmed_not_committed,
        "cancelled_but_charged": cancelled_but_charged,
        "stock_left_unpaid": shipped_unpaid,  # a committed reservation without a captured payment
        "stock_drift_units": sum(abs(a) + abs(b) for a, b in _stock_drift(facts).values()),
    }


# --------------------------------------------------------------------------- errors


def in_fault_windows(start: float, faults: Sequence[Fault], grace: float = RECOVERY_TARGET_S) -> bool:
    """From a fault's start until ``grace`` after it ended — and after the processes it
    restarted were ready again, when that took longer: a node still booting is still missing."""
    return any(f.start <= start <= f.end + (f.back_s or 0.0) + grace for f in faults)


def error_rate(ops: Sequence[Op], faults: Sequence[Fault]) -> dict[str, Any]:
    during = [op for op in ops if in_fault_windows(op.start, faults)]
    failed = [op for op in during if not op.ok]
    all_failed = sum(1 for op in ops if not op.ok)
    errors = Counter(op.error or f"status {op.status}" for op in failed)
    attempts = [entry for op in during for entry in op.trail]
    failed_attempts = sum(1 for entry in attempts if not _attempt_ok(entry))
    return {
        "rate": round(len(failed) / len(during), 5) if during else None,
        "during_faults": len(during),
        "failed_during_faults": len(failed),
        "retried_during_faults": sum(1 for op in during if op.attempts > 1),
        # What a client without retries would have seen: every attempt, failed ones included.
        "attempts_during_faults": len(attempts),
        "attempt_failure_rate": round(failed_attempts / len(attempts), 5) if attempts else None,
        "all": len(ops),
        "failed_all": all_failed,
        "rate_all": round(all_failed / len(ops), 5) if ops else None,
        "errors": dict(errors.most_common(5)),
    }


def _attempt_ok(entry: str) -> bool:
    """Whether one entry of an operation's trail (``"gw1 200 0.01"``, ``"gw2 timeout (...) 6.00"``)
    was a 2xx answer."""
    outcome = entry.partition(" ")[2].rpartition(" ")[0]
    return outcome.isdigit() and 200 <= int(outcome) < 300


# --------------------------------------------------------------------------- recovery


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@dataclass(frozen=True, slots=True)
class Thresholds:
    request: Mapping[str, float]
    event: float


def thresholds(ops: Sequence[Op], finals: Mapping[str, float], before: float) -> Thresholds:
    """What counts as normal, from what ended before the first fault."""
    request: dict[str, float] = {}
    for kind, floor in REQUEST_FLOOR_S.items():
        p99 = _p99([op.latency for op in ops if op.kind == kind and op.ok and op.end < before])
        request[kind] = max(floor, BASELINE_FACTOR * p99) if p99 is not None else floor
    lags = []
    for op in ops:
        final = finals.get(op.order_id or "")
        if op.kind == "checkout" and op.ok and final is not None and final < before:
            lags.append(final - op.end)
    p99 = _p99(lags)
    return Thresholds(
        request, max(EVENT_FLOOR_S, BASELINE_FACTOR * p99) if p99 is not None else EVENT_FLOOR_S
    )


def final_times(
    deliveries: Iterable[Delivery], consumers: Sequence[str]
) -> tuple[dict[str, float], set[str]]:
    """(order id -> when the last consumer got its final event, order ids whose final event was
    cancelled). An order some consumer never got a final event for is absent."""
    first: dict[tuple[str, str], float] = {}
    cancelled: set[str] = set()
    for d in deliveries:
        if d.status in FINAL:
            key = (d.consumer, d.order_id)
            first[key] = min(first.get(key, math.inf), d.at)
            if d.status == "cancelled":
                cancelled.add(d.order_id)
    orders = {order_id for _consumer, order_id in first}
    finals = {}
    for order_id in orders:
        times = [first.get((c, order_id)) for c in consumers]
        if all(t is not None for t in times):
            finals[order_id] = max(t for t in times if t is not None)
    return finals, cancelled


@dataclass(frozen=True, slots=True)
class Abnormal:
    what: str  # request | event
    start: float
    end: float  # math.inf: never came
    why: str


def abnormal_items(
    ops: Sequence[Op], finals: Mapping[str, float], cancelled: set[str], limits: Thresholds
) -> list[Abnormal]:
    """Requests that failed or were slow, orders whose final event was late, missing or a
    cancellation. A request that succeeded on another attempt within the normal time is not
    abnormal: riding over a dead gateway is what the client's retries are for (they are
    counted apart, in ``retried_until_s``)."""
    items = []
    for op in ops:
        why = ""
        if not op.ok:
            why = op.error or f"failed ({op.status})"
        elif op.latency > limits.request.get(op.kind, math.inf):
            why = f"slow ({op.latency:.2f} s)"
        if why:
            items.append(Abnormal("request", op.start, op.end, f"{op.kind}: {why}"))
    for op in ops:
        if op.kind != "checkout" or not op.ok or op.order_id is None:
            continue
        final = finals.get(op.order_id)
        if final is None:
            items.append(Abnormal("event", op.start, math.inf, "no final event"))
        elif op.order_id in cancelled:
            items.append(Abnormal("event", op.start, final, "order cancelled"))
        elif final - op.end > limits.event:
            items.append(Abnormal("event", op.start, final, f"late ({final - op.end:.2f} s)"))
    return items


def _owner(item: Abnormal, faults: Sequence[Fault]) -> Fault | None:
    """The latest fault that had begun when the item ended (when it began, if it never ended)."""
    moment = item.end if math.isfinite(item.end) else item.start
    owner = None
    for f in sorted(faults, key=lambda f: f.start):
        if f.start <= moment:
            owner = f
    return owner


def recovery(
    ops: Sequence[Op], deliveries: Sequence[Delivery], consumers: Sequence[str], faults: Sequence[Fault]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``recovery_s``: the max and per fault, details per fault)."""
    first = min((f.start for f in faults), default=math.inf)
    finals, cancelled = final_times(deliveries, consumers)
    limits = thresholds(ops, finals, first)
    items = abnormal_items(ops, finals, cancelled, limits)
    per_fault: dict[str, float | None] = {}
    details: dict[str, Any] = {
        "thresholds": {
            "request_s": {k: round(v, 3) for k, v in limits.request.items()},
            "event_s": round(limits.event, 3),
        },
        "before_first_fault": sum(1 for i in items if _owner(i, faults) is None),
        "faults": {},
    }
    retried = [op for op in ops if op.ok and op.attempts > 1]
    for fault in faults:
        mine = [i for i in items if _owner(i, faults) is fault]
        requests = [i.end for i in mine if i.what == "request"]
        events = [i.end for i in mine if i.what == "event"]
        last_request = max(requests, default=fault.end)
        last_event = max(events, default=fault.end)
        per_fault[fault.name] = _since(max(last_request, last_event), fault.end)
        retries = [
            op.end for op in retried if _owner(Abnormal("request", op.start, op.end, ""), faults) is fault
        ]
        details["faults"][fault.name] = {
            "start": round(fault.start, 2),
            "end": round(fault.end, 2),
            "restarted_ready_s": fault.back_s,
            "requests_s": _since(last_request, fault.end),
            "events_s": _since(last_event, fault.end),
            "retried_until_s": _since(max(retries, default=fault.end), fault.end),
            "abnormal_requests": len(requests),
            "abnormal_orders": len(events),
            "retried_requests": len(retries),
            "why": dict(Counter(i.why.split(" (")[0] for i in mine).most_common(6)),
        }
    values = list(per_fault.values())
    worst = None if not values or any(v is None for v in values) else max(v for v in values if v is not None)
    return {"max": worst, "per_fault": per_fault}, details


def _since(moment: float, end: float) -> float | None:
    if not math.isfinite(moment):
        return None
    return round(max(0.0, moment - end), 2)
