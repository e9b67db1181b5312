"""The gateway's metrics of token verification: JWKS refreshes, revocations and their sources.

Counted off the hot path only: fetches and arrivals report through hooks of the pollers and the
subscriber (``on_poll``, ``on_received``), the gauges are read at scrape time. Refusals (401, 403,
429...) are counted by the runtime for every filter alike (``edgeway_gateway_rejections_total``).
"""

from __future__ import annotations

from collections.abc import Callable

from edgeway.observability.metrics import Metrics

_RESULT = {True: "ok", False: "failed"}


class AuthMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.jwks_refreshes = metrics.counter(
            "edgeway_gateway_jwks_refreshes_total",
            "JWKS fetches (at start, scheduled, and for a token with an unknown kid), by result: ok, "
            "or failed (the cached keys are kept).",
            ("result",),
        )
        self.revocation_polls = metrics.counter(
            "edgeway_gateway_revocation_polls_total",
            "Polls of the security service's revocation feed, by result: ok, or failed (the known "
            "revocations are kept).",
            ("result",),
        )
        self.revocations_received = metrics.counter(
            "edgeway_gateway_revocations_received_total",
            "Revoked tokens received, by source: push (the event bus) or poll (the feed; it also "
            "lists tokens already pushed).",
            ("source",),
        )

    def jwks_fetched(self, ok: bool) -> None:
        self.jwks_refreshes.labels(_RESULT[ok]).inc()

    def revocations_polled(self, ok: bool) -> None:
        self.revocation_polls.labels(_RESULT[ok]).inc()

    def received_by(self, source: str) -> Callable[[int], None]:
        child = self.revocations_received.labels(source)
        return child.inc

    def watch_known(self, count: Callable[[], int]) -> None:
        self._metrics.gauge(
            "edgeway_gateway_revocations_known",
            "Revoked tokens the gateway refuses now (not yet expired).",
            function=lambda: float(count()),
        )

    def watch_push(self, up: Callable[[], bool]) -> None:
        self._metrics.gauge(
            "edgeway_gateway_revocations_push_up",
            "1 while revocations are pushed over the event bus, 0 while the push is down (the feed is "
            "then polled every fallback_interval).",
            function=lambda: 1.0 if up() else 0.0,
        )
