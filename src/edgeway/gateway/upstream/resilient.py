"""A service's resilience at the gateway: its guard as a component, and one request's way through it.

The logic (breakers, retry decisions and budget, ejection, health verdicts, shedding) lives in
:mod:`edgeway.resilience`, which knows nothing of HTTP. This module is the boundary: it compiles
a service's config into a :class:`~edgeway.resilience.guard.ServiceGuard`, runs it as a gateway
component (health checks run while it is started; instances that discovery removes are
forgotten), classifies the engine's outcomes for it, decides which failures are *safe* to retry,
and turns its refusals into 503 problems with ``Retry-After``.

Each gateway — each config generation, with live reload — has its own guard per service, so a
reload that is refused never changes the running one's behaviour. Clusters (and their endpoints)
are shared across generations; when a gateway starts, its guards set every endpoint's
``available`` flag from their own (fresh) view, and an unguarded service puts every endpoint
back in the balancer, so nothing a previous generation decided lingers.

Every exchange with a service goes through its guard the same way, in one place: the
:class:`~edgeway.gateway.upstream.call.UpstreamCall` the proxy, aggregate calls and Python
endpoints' service clients all make. A refusal is a :class:`Refused` upstream error, so that a
call that was refused fails like any other failed call; a proxied request answers it with its
503 problem (:meth:`Refused.rejection`). One breaker, one budget, one view of its instances per
service, whichever path the traffic takes.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import GatewayEnv
from edgeway.gateway.upstream.clusters import Cluster, ClusterChange, Endpoint
from edgeway.gateway.upstream.config import Service
from edgeway.http.errors import (
    UpstreamError,
)
from edgeway.resilience.guard import GuardPolicy, ServiceGuard, retry_after_header
from edgeway.resilience.health import HealthChecker
from edgeway.resilience.telemetry import Telemetry

__all__ = [
    "CircuitOpen",
    "NoInstance",
    "Refused",
    "ServiceOverloaded",
    "ServiceResilience",
    "guard_policy",
    "service_guard",
]


class Refused(UpstreamError):
    """The gateway did not send a call: its service's guard (or the balancer) refused it.

    ``retry_after``: seconds until the service is likely to take calls again, when known.
    ``code`` names the reason in machine-readable form.
    """

    status = 503
    code = "refused"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ``Retry-After`` of a 503 answered for this refusal (none when unknown)."""
        if self.retry_after is None:
            return []
        return [(b"retry-after", retry_after_header(self.retry_after))]

    def rejection(self) -> Rejection:
        """The 503 problem a proxied request gets for this refusal."""
        return Rejection(503, "Service Unavailable", str(self), headers=self.headers())


class CircuitOpen(Refused):
    """The service's breaker is open."""

    code = "circuit_open"


class NoInstance(Refused):
    """No instance of the service is available (breakers, ejections, health checks, none known)."""

    code = "no_instance"


class ServiceOverloaded(Refused):
    """The service's ``concurrency`` bound is full and its queue too."""

    code = "overloaded"


def guard_policy(svc: Service) -> GuardPolicy | None:
    """The compiled resilience of a configured service; None when it configures none."""
    breaker, retry, outlier = svc.breaker, svc.retry, svc.outlier_ejection
    if (
        breaker is None
        and retry is None
        and outlier is None
        and svc.health_check is None
        and svc.concurrency is None
    ):
        return None
    return GuardPolicy(
        instance_breaker=breaker.instance.policy() if breaker is not None and breaker.instance else None,
        service_breaker=breaker.service.policy() if breaker is not None and breaker.service else None,
        breaker_statuses=frozenset(breaker.failure_statuses) if breaker is not None else frozenset(),
        retry=retry.policy() if retry is not None else None,
        outlier=outlier.policy() if outlier is not None else None,
        outlier_statuses=frozenset(outlier.failure_statuses) if outlier is not None else frozenset(),
        health=svc.health_check.policy() if svc.health_check is not None else None,
        concurrency=svc.concurrency.policy() if svc.concurrency is not None else None,
        panic_threshold=svc.panic_threshold,
    )


class ServiceResilience:
    """The component of one service in one gateway: its guard (None when the service configures
    no resilience) and, while started, its health checks."""

    def __init__(self, cluster: Cluster, guard: ServiceGuard[Endpoint] | None) -> None:
        self.cluster = cluster
        self.guard = guard
        self._checker: HealthChecker | None = guard.health_checker() if guard is not None else None

    def __repr__(self) -> str:
        return f"<ServiceResilience {self.cluster.name!r} guarded={self.guard is not None}>"

    async def start(self) -> None:
        guard = self.guard
        if guard is None:
            for ep in self.cluster.endpoints:
                ep.available = True
            return
        self.cluster.listeners.append(self._changed)
        guard.refresh_all()
        if self._checker is not None:
            await self._checker.start()

    async def stop(self) -> None:
        if self.guard is None:
            return
        if self._changed in self.cluster.listeners:
            self.cluster.listeners.remove(self._changed)
        if self._checker is not None:
            await self._checker.stop()
        self.guard.close()

    def _changed(self, cluster: Cluster, change: ClusterChange) -> None:
        assert self.guard is not None  # listening only when guarded
        for ep in change.removed:
            self.guard.forget(ep)
        self.guard.recount()  # the share of healthy instances changed with the membership


def service_guard(env: GatewayEnv, service: str) -> ServiceGuard[Endpoint] | None:
    """The guard of ``service`` in this gateway (made once, shared by its routes); None when the
    service configures no resilience."""

    def make() -> ServiceResilience:
        cluster = env.clusters[service]
        policy = guard_policy(env.config.services[service])
        if policy is None:
            return ServiceResilience(cluster, None)
        guard = ServiceGuard(service, policy, _members(cluster), Telemetry(service, env.metrics))
        guard.on_unhealthy = _instance_down
        return ServiceResilience(cluster, guard)

    return env.shared(f"resilience:{service}", make).guard


def _instance_down(ep: Endpoint, reason: str) -> None:
    # The attempts waiting on the instance fail now, as if their timeout had passed: a retry
    # goes to another instance (within the retry policy and budget) or the client gets a 504,
    # instead of waiting out the rest of the timeout on an instance known to be down.
    ep.pool.instance_down(reason)
    if ep.h2 is not None:
        ep.h2.instance_down(reason)


def _members(cluster: Cluster) -> Callable[[], list[Endpoint]]:
    # Read the list each time: discovery replaces it.
    return lambda: cluster.endpoints
