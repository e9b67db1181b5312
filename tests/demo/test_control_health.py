"""The control room's breakers and health: an edge's own breaker and balancer gauges (rendered by
the resilience layer's telemetry, as a gateway's ``/metrics`` serves them) read back as one row
per instance, and a poll that asks each edge with the admin token, each process's readiness URL,
and says which edge could not be read."""

from __future__ import annotations

import httpx

from edgeway.demo.control.health import HealthBoard, ProcessView, parse_edge_metrics
from edgeway.observability.metrics import Metrics
from edgeway.resilience.breaker import BreakerPolicy, CircuitBreaker
from edgeway.resilience.telemetry import SERVICE_WIDE, Telemetry


def _edge_metrics() -> str:
    """What an edge guarding two catalog instances exposes after the second one's breaker opened
    and the balancer took it out."""
    metrics = Metrics("gateway", http_server=False)
    telemetry = Telemetry("catalog", metrics)
    healthy, failing, whole = (CircuitBreaker(BreakerPolicy(consecutive_failures=2)) for _ in range(3))
    telemetry.watch_breaker("127.0.0.1:8101", healthy)
    telemetry.watch_breaker("127.0.0.1:8102", failing)
    telemetry.watch_breaker(SERVICE_WIDE, whole)
    telemetry.watch_available("127.0.0.1:8101", lambda: True)
    telemetry.watch_available("127.0.0.1:8102", lambda: failing.allow())
    failing.record_failure()
    failing.record_failure()
    body, _ = metrics.exposition()
    return body.decode()


def test_each_instance_an_edge_guards_is_one_row_with_its_breaker_and_balancer_state() -> None:
    rows = parse_edge_metrics(_edge_metrics(), {8101: "catalog-1", 8102: "catalog-2"})
    assert rows == [
        {"service": "catalog", "instance": "*", "process": None, "breaker": "closed", "available": None},
        {
            "service": "catalog",
            "instance": "127.0.0.1:8101",
            "process": "catalog-1",
            "breaker": "closed",
            "available": True,
        },
        {
            "service": "catalog",
            "instance": "127.0.0.1:8102",
            "process": "catalog-2",
            "breaker": "open",
            "available": False,
        },
    ]


async def test_a_poll_reads_edges_with_the_admin_token_probes_and_names_an_edge_it_cannot_read() -> None:
    metrics_text = _edge_metrics()
    tokens: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "gateway-admin":
            tokens.append(request.headers.get("authorization"))
            if request.url.path == "/strangler":  # an edge without a strangler rule
                return httpx.Response(200, json={"rules": []})
            return httpx.Response(200, text=metrics_text)
        if host == "bff-admin":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200 if host == "catalog-1" else 503)

    board = HealthBoard(
        processes=lambda: [
            ProcessView("catalog-1", "service", "ready", 0),
            ProcessView("catalog-2", "service", "restarting", 3),
        ],
        ready_urls={
            "catalog-1": "http://catalog-1/health/ready",
            "catalog-2": "http://catalog-2/health/ready",
        },
        edge_admin_urls={"gateway": "http://gateway-admin", "web-bff": "http://bff-admin"},
        admin_token="s3cret",
        instance_names={8101: "catalog-1", 8102: "catalog-2"},
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        await board.poll(http)
    snapshot = board.snapshot()

    assert tokens == ["Bearer s3cret", "Bearer s3cret"]  # /metrics and /strangler
    assert snapshot["strangler"] == {"gateway": []}
    assert snapshot["processes"] == [
        {"name": "catalog-1", "role": "service", "state": "ready", "restarts": 0, "ready": True},
        {"name": "catalog-2", "role": "service", "state": "restarting", "restarts": 3, "ready": False},
    ]
    assert [(r["process"], r["breaker"]) for r in snapshot["breakers"]["gateway"]] == [
        (None, "closed"),
        ("catalog-1", "closed"),
        ("catalog-2", "open"),
    ]
    assert "web-bff" not in snapshot["breakers"]
    assert snapshot["edge_errors"] == {"web-bff": "ConnectError: connection refused"}
    assert snapshot["updated"] > 0
