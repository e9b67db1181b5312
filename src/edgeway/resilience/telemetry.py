"""What the resilience layer tells operators: one log line per state change, Prometheus metrics.

Log lines go to the ``edgeway.resilience`` logger, so a process that set up the common JSON log
format (:func:`edgeway.observability.logs.setup_logging`; the gateway does) writes them in that
schema, with the fields ``event``, ``upstream_service`` and ``instance`` plus the event's own
(``service`` is the schema's name of the process that logs).

Metrics (all labelled by ``service``; ``instance`` is ``host:port``, or ``*`` for the breaker of
the service as a whole):

=========================================== ====================================================
``edgeway_breaker_state``                    gauge: 0 closed, 1 half-open, 2 open
``edgeway_breaker_transitions_total``        counter, label ``to``: the state entered
``edgeway_instance_available``               gauge: 1 while the instance is in the balancer
``edgeway_instance_healthy``                 gauge: 1 while its active health check passes
                                             (services with ``health_check`` only)
``edgeway_instance_ejected``                 gauge: 1 while outlier detection holds it out
                                             (services with ``outlier_ejection`` only)
``edgeway_upstream_panic``                   gauge: 1 while the service is in panic (too few
                                             healthy instances: health checks and ejections
                                             are ignored; no ``instance`` label)
``edgeway_upstream_retries_total``           counter, label ``reason``: ``error`` | ``status``
``edgeway_retry_budget_exhausted_total``     counter: retries refused by the budget
``edgeway_outlier_ejections_total``          counter, per instance
``edgeway_health_checks_total``              counter, label ``result``: ``pass`` | ``fail``
``edgeway_shed_requests_total``              counter, labels ``scope`` (``route`` | ``service``)
                                             and ``name``: requests refused by a concurrency bound
=========================================== ====================================================
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeway.resilience.breaker import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    from edgeway.observability.metrics import Metrics

__all__ = ["SERVICE_WIDE", "Telemetry", "shed_counter"]

log = logging.getLogger("edgeway.resilience")

SERVICE_WIDE = "*"  # the ``instance`` label of a service-level breaker


def shed_counter(metrics: Metrics | None, scope: str, name: str) -> Callable[[], None]:
    """A function counting one shed request for a route or service (a no-op without metrics)."""
    if metrics is None:
        return lambda: None
    child = metrics.counter(
        "edgeway_shed_requests_total",
        "Requests refused by a concurrency bound, by scope (route or service) and its name.",
        ("scope", "name"),
    ).labels(scope, name)
    return child.inc


class Telemetry:
    """Logs and metrics for one service's breakers, retries, ejections and health checks."""

    def __init__(self, service: str, metrics: Metrics | None) -> None:
        self.service = service
        self.metrics = metrics
        self.shed = shed_counter(metrics, "service", service)
        if metrics is None:
            return
        self._state = metrics.gauge(
            "edgeway_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open (instance '*' is the service's).",
            ("service", "instance"),
        )
        self._transitions = metrics.counter(
            "edgeway_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            ("service", "instance", "to"),
        )
        self._available = metrics.gauge(
            "edgeway_instance_available",
            "1 while the instance is in the balancer (breaker, ejection and health check allow it).",
            ("service", "instance"),
        )
        self._healthy = metrics.gauge(
            "edgeway_instance_healthy",
            "1 while the instance's active health check passes, 0 while it fails.",
            ("service", "instance"),
        )
        self._ejected = metrics.gauge(
            "edgeway_instance_ejected",
            "1 while outlier detection holds the instance out of the balancer.",
            ("service", "instance"),
        )
        self._panic = metrics.gauge(
            "edgeway_upstream_panic",
            "1 while the service is in panic: too few healthy instances, so health checks and "
            "outlier ejection are ignored and every instance takes traffic.",
            ("service",),
        )
        self._retries = metrics.counter(
            "edgeway_upstream_retries_total",
            "Upstream calls retried on another instance, by reason (error or status).",
            ("service", "reason"),
        )
        self._exhausted = metrics.counter(
            "edgeway_retry_budget_exhausted_total",
            "Retries not made because the service's retry budget was spent.",
            ("service",),
        )
        self._ejections = metrics.counter(
            "edgeway_outlier_ejections_total",
            "Instances ejected by outlier detection.",
            ("service", "instance"),
        )
        self._checks = metrics.counter(
            "edgeway_health_checks_total",
            "Active health checks, by result.",
            ("service", "instance", "result"),
        )

    def _event(self, level: int, message: str, event: str, instance: str, **fields: Any) -> None:
        log.log(
            level,
            message,
            extra={"event": event, "upstream_service": self.service, "instance": instance, **fields},
        )

    # -- breakers ----------------------------------------------------------------------------
    def watch_breaker(
        self, instance: str, breaker: CircuitBreaker, then: Callable[[], None] | None = None
    ) -> None:
        """Export the breaker's state (read at scrape time), log and count its transitions, and
        call ``then`` after each one."""

        def changed(b: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
            level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
            detail = f" for {b.policy.open_for:g}s" if new is BreakerState.OPEN else ""
            self._event(
                level,
                f"circuit breaker of {self.service} {instance} {new.value}{detail}",
                "breaker",
                instance,
                state=new.value,
                previous=old.value,
            )
            if self.metrics is not None:
                self._transitions.labels(self.service, instance, new.value).inc()
            if then is not None:
                then()

        breaker.on_change = changed
        if self.metrics is not None:
            self._state.labels(self.service, instance).set_function(lambda: breaker.state.gauge)

    def watch_available(self, instance: str, available: Callable[[], bool]) -> None:
        if self.metrics is not None:
            self._available.labels(self.service, instance).set_function(lambda: 1.0 if available() else 0.0)

    def watch_health(self, instance: str, healthy: Callable[[], bool]) -> None:
        if self.metrics is not None:
            self._healthy.labels(self.service, instance).set_function(lambda: 1.0 if healthy() else 0.0)

    def watch_ejection(self, instance: str, ejected: Callable[[], bool]) -> None:
        if self.metrics is not None:
            self._ejected.labels(self.service, instance).set_function(lambda: 1.0 if ejected() else 0.0)

    def watch_panic(self, panic: Callable[[], bool]) -> None:
        if self.metrics is not None:
            self._panic.labels(self.service).set_function(lambda: 1.0 if panic() else 0.0)

    def panic_changed(self, panic: bool, healthy: int, total: int, threshold: float) -> None:
        """Log entering or leaving panic (a warning both ways: either changes where traffic goes)."""
        share = f"{healthy} of {total} instances healthy"
        if panic:
            message = (
                f"{self.service} in panic: {share}, below {threshold:g}%; "
                "balancing over every instance, health checks and ejections ignored"
            )
        else:
            message = f"{self.service} out of panic: {share}; unhealthy instances are out again"
        self._event(
            logging.WARNING,
            message,
            "panic",
            SERVICE_WIDE,
            panic=panic,
            healthy=healthy,
            instances=total,
            threshold=threshold,
        )

    def forget(self, instance: str) -> None:
        """Drop an instance's series (it left the service)."""
        if self.metrics is None:
            return
        for gauge in (self._state, self._available, self._healthy, self._ejected):
            with contextlib.suppress(KeyError):
                gauge.remove(self.service, instance)

    # -- retries -----------------------------------------------------------------------------
    def retried(self, reason: str) -> None:
        if self.metrics is not None:
            self._retries.labels(self.service, reason).inc()

    def budget_exhausted(self) -> None:
        if self.metrics is not None:
            self._exhausted.labels(self.service).inc()

    # -- ejection and health -----------------------------------------------------------------
    def ejected(self, instance: str, seconds: float, ejections: int) -> None:
        self._event(
            logging.WARNING,
            f"{self.service} {instance} ejected for {seconds:g}s (ejection #{ejections})",
            "outlier_ejected",
            instance,
            seconds=seconds,
            ejections=ejections,
        )
        if self.metrics is not None:
            self._ejections.labels(self.service, instance).inc()

    def returned(self, instance: str) -> None:
        self._event(
            logging.INFO, f"{self.service} {instance} back from ejection", "outlier_returned", instance
        )

    def checked(self, instance: str, passed: bool) -> None:
        if self.metrics is not None:
            self._checks.labels(self.service, instance, "pass" if passed else "fail").inc()

    def health_changed(self, instance: str, healthy: bool, reason: str) -> None:
        self._event(
            logging.INFO if healthy else logging.WARNING,
            f"{self.service} {instance} is {'healthy' if healthy else 'unhealthy'}: {reason}",
            "health",
            instance,
            healthy=healthy,
            reason=reason,
        )
