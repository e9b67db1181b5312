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

Two kinds of caller go through a guard: the proxy (:func:`begin_call` / :func:`wait_call`, whose
refusals are 503 :class:`Rejection` problems) and the calls the gateway makes itself, aggregate
calls and Python endpoints' service clients (:func:`admit_call` / :func:`wait_admission`, whose
refusals are :class:`Refused` upstream errors, so that a call that was refused fails like any
other failed call). Both share the service's guard: one breaker, one budget, one view of its
instances per service, whichever path the traffic takes.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import GatewayEnv
from edgeway.gateway.filters.concurrency import admit
from edgeway.gateway.upstream.clusters import Cluster, ClusterChange, Endpoint
from edgeway.gateway.upstream.config import Service
from edgeway.http.body import BodyStream
from edgeway.http.errors import (
    InstanceDown,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from edgeway.http.exchange import Exchange
from edgeway.resilience.errors import NoInstanceAvailable, Overloaded
from edgeway.resilience.guard import GuardPolicy, InstanceState, ServiceGuard, retry_after_header
from edgeway.resilience.health import HealthChecker
from edgeway.resilience.retry import IDEMPOTENT_METHODS
from edgeway.resilience.telemetry import Telemetry

__all__ = [
    "CircuitOpen",
    "NoInstance",
    "Refused",
    "ServiceCall",
    "ServiceOverloaded",
    "ServiceResilience",
    "admit_call",
    "begin_call",
    "guard_policy",
    "service_guard",
    "wait_admission",
    "wait_call",
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


def _members(cluster: Cluster) -> Callable[[], list[Endpoint]]:
    # Read the list each time: discovery replaces it.
    return lambda: cluster.endpoints


class ServiceCall:
    """One request's way through a guarded service: its attempts, the instances it tried, and
    whether it may be sent again. Made by :func:`begin_call` or :func:`admit_call`; ``finish``
    must follow."""

    __slots__ = ("_body", "_method", "cluster", "guard", "state", "tried")

    def __init__(
        self, cluster: Cluster, guard: ServiceGuard[Endpoint], method: bytes, body: BodyStream | None
    ) -> None:
        self.cluster = cluster
        self.guard = guard
        self._method = method
        self._body = body  # None: a body the caller holds whole (it can send it again)
        self.tried: list[Endpoint] = []
        self.state: InstanceState[Endpoint] | None = None

    @property
    def repeatable(self) -> bool:
        """Idempotent, and its body (if any) can be sent again: what the client could have done
        itself. A streamed body can be sent again only when it was empty."""
        body = self._body
        return self._method in IDEMPOTENT_METHODS and (body is None or (body.complete and body.received == 0))

    def pick(self) -> Endpoint:
        """The instance for the next attempt; a 503 Rejection when none is available."""
        try:
            return self.pick_instance()
        except NoInstance as exc:
            raise exc.rejection() from None

    def pick_instance(self) -> Endpoint:
        """The instance for the next attempt; :class:`NoInstance` when none is available."""
        try:
            state = self.guard.pick(self.cluster.balancer, self.tried)
        except NoInstanceAvailable:
            raise NoInstance(
                f"no available instance of service {self.cluster.name!r}", self.guard.retry_after_hint()
            ) from None
        self.state = state
        self.tried.append(state.member)
        return state.member

    def retry_after_error(self, exc: UpstreamError, remaining: float) -> float | None:
        """Backoff before a retry of an attempt that failed with ``exc``, or None for no retry."""
        never_sent = (
            isinstance(exc, UpstreamConnectError | PoolTimeout)
            or (isinstance(exc, UpstreamTimeout) and exc.phase == "connect")
            or (isinstance(exc, InstanceDown) and not exc.sent)
        )
        if not (never_sent or self.repeatable):
            return None
        return self.guard.retry_delay(len(self.tried) - 1, remaining, self.tried, "error")

    def retry_after_status(self, status: int, remaining: float) -> float | None:
        """Backoff before a retry of an attempt answered with ``status`` (not yet sent on)."""
        if status not in self.guard.retry_on or not self.repeatable:
            return None
        return self.guard.retry_delay(len(self.tried) - 1, remaining, self.tried, "status")

    def report(self, outcome: int | BaseException) -> None:
        """The outcome of the current attempt: a status, or the exception that ended it.

        An exception other than an upstream error (the client went away, a body too large)
        says nothing about the instance.
        """
        state = self.state
        if state is not None:
            self.state = None
            if isinstance(outcome, int):
                self.guard.report(state, outcome, False)
            else:
                self.guard.report(state, 0, isinstance(outcome, UpstreamError))

    def finish(self, status: int, exc: BaseException | None) -> None:
        """The request is over (``status`` as answered to the client, 0 if not at all)."""
        guard = self.guard
        if guard.limiter is not None:
            guard.limiter.release()
        if exc is None:
            guard.finish(status, False)
        else:
            guard.finish(0, isinstance(exc, UpstreamError))


def begin_call(cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> ServiceCall | None:
    """Admit a proxied request to a guarded service: its concurrency bound, then its breaker.

    Synchronous, so the common case costs no coroutine; None when the request must wait for a
    concurrency slot (then :func:`wait_call` admits it).
    """
    limiter = guard.limiter
    if limiter is not None and not limiter.try_acquire():
        return None
    return _rejecting(cluster, guard, ex)


async def wait_call(cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> ServiceCall:
    """Admit a proxied request that waits for a concurrency slot (or is refused with 503)."""
    assert guard.limiter is not None  # begin_call only defers when there is a limiter
    await admit(guard.limiter, f"service {cluster.name!r}", guard.telemetry.shed)
    return _rejecting(cluster, guard, ex)


def _rejecting(cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> ServiceCall:
    try:
        return _admitted(cluster, guard, ex.method, ex.body)
    except CircuitOpen as exc:
        raise exc.rejection() from None


def admit_call(cluster: Cluster, guard: ServiceGuard[Endpoint], method: bytes) -> ServiceCall | None:
    """Admit a call the gateway makes itself (its body, if any, held whole): the service's
    concurrency bound, then its breaker; :class:`CircuitOpen` when the breaker refuses.

    None when the call must wait for a concurrency slot (then :func:`wait_admission`).
    """
    limiter = guard.limiter
    if limiter is not None and not limiter.try_acquire():
        return None
    return _admitted(cluster, guard, method, None)


async def wait_admission(cluster: Cluster, guard: ServiceGuard[Endpoint], method: bytes) -> ServiceCall:
    """Admit a call that waits for a concurrency slot; :class:`ServiceOverloaded` when the
    queue is full or the wait too long."""
    limiter = guard.limiter
    assert limiter is not None  # admit_call only defers when there is a limiter
    try:
        await limiter.acquire()
    except Overloaded as exc:
        guard.telemetry.shed()
        raise ServiceOverloaded(
            f"service {cluster.name!r} is at its concurrency limit: {exc}", exc.retry_after
        ) from None
    return _admitted(cluster, guard, method, None)


def _admitted(
    cluster: Cluster, guard: ServiceGuard[Endpoint], method: bytes, body: BodyStream | None
) -> ServiceCall:
    breaker = guard.breaker
    if breaker is not None and not breaker.allow():
        if guard.limiter is not None:
            guard.limiter.release()
        raise CircuitOpen(f"the circuit breaker of service {cluster.name!r} is open", breaker.retry_after)
    if guard.budget is not None:
        guard.budget.record_request()
    return ServiceCall(cluster, guard, method, body)
