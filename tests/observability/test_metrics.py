from __future__ import annotations

import pytest

from edgeway.observability.metrics import Metrics, MetricsConflictError


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics("a"), Metrics("b")
    a.observe_request("GET", "/x", 200, 0.01)
    assert b"http_server_requests_total" in b.exposition()[0]
    assert b'route="/x"' not in b.exposition()[0]
    assert b'route="/x"' in a.exposition()[0]


def test_registering_the_same_metric_twice_returns_it() -> None:
    metrics = Metrics("s")
    first = metrics.counter("events_published_total", "Events published.", ["channel"])
    assert metrics.counter("events_published_total", "Events published.", ["channel"]) is first


def test_conflicting_registration_is_refused_with_the_reason() -> None:
    metrics = Metrics("s")
    metrics.counter("jobs_total", "Jobs.", ["kind"])
    with pytest.raises(MetricsConflictError, match="already registered as Counter"):
        metrics.gauge("jobs_total", "Jobs.")


def test_gauge_function_is_read_at_scrape_time() -> None:
    metrics = Metrics("s")
    backlog = [3]
    metrics.gauge("outbox_backlog", "Events not yet relayed.", function=lambda: backlog[0])
    assert b"outbox_backlog 3.0" in metrics.exposition()[0]
    backlog[0] = 7
    body, content_type = metrics.exposition()
    assert b"outbox_backlog 7.0" in body
    assert content_type.startswith("text/plain")
