"""A checkout's trace in the control room goes on past the HTTP calls: the orders service's event
through the broker to the notifications service (a producer span, then a consumer span whose
parent it is), and the saga's steps, are one waterfall, and the topology draws the broker between
the two services."""

from __future__ import annotations

from edgeway.demo.control.collector import Collector
from edgeway.demo.control.spans import Hop, Kind

TRACE = "ab" * 16
T0 = 1714564800_000_000_000


def _hop(span: str, parent: str | None, node: str, name: str, kind: Kind, start_ms: int, end_ms: int) -> Hop:
    return Hop(
        trace_id=TRACE,
        span_id=span * 8,
        parent_id=parent * 8 if parent else None,
        node=node,
        name=name,
        kind=kind,
        start_ns=T0 + start_ms * 10**6,
        end_ns=T0 + end_ms * 10**6,
        status=202 if kind == "server" else None,
    )


def test_an_event_through_the_broker_and_the_saga_steps_are_in_the_checkout_s_waterfall() -> None:
    collector = Collector(clock=lambda: T0 / 1e9 + 1)
    collector.add_hops(
        [
            # arrival order is not call order: the consumer's span is exported first
            _hop("55", "44", "notifications", "process orders.placed", "consumer", 30, 45),
            _hop("11", None, "web-bff", "POST /api/orders", "server", 0, 20),
            _hop("22", "11", "orders", "POST /orders", "server", 2, 18),
            _hop("33", "22", "orders", "saga checkout: reserve stock", "internal", 5, 10),
            _hop("44", "22", "orders", "publish orders.placed", "producer", 12, 13),
            _hop("66", "55", "notifications", "send e-mail", "internal", 35, 44),
        ]
    )

    waterfall = collector.trace(TRACE)
    assert waterfall is not None
    assert [(s["node"], s["name"], s["depth"]) for s in waterfall["spans"]] == [
        ("web-bff", "POST /api/orders", 0),
        ("orders", "POST /orders", 1),
        ("orders", "saga checkout: reserve stock", 2),
        ("orders", "publish orders.placed", 2),
        ("notifications", "process orders.placed", 3),
        ("notifications", "send e-mail", 4),
    ]
    assert waterfall["duration_ms"] == 45.0  # to the e-mail, after the HTTP answer
    assert waterfall["nodes"] == ["web-bff", "orders", "notifications"]
    calls = {(link["source"], link["target"]) for link in collector.links()}
    assert calls == {
        ("browser", "web-bff"),
        ("web-bff", "orders"),
        ("orders", "broker"),
        ("broker", "notifications"),
    }
