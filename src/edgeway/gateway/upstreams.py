"""Clusters: the running form of a configured service — its instances, their connection pools,
the balancer, the timeouts, and its resilience (breakers, retries, ejection, health checks,
shedding: a :class:`~edgeway.resilience.guard.ServiceGuard`, None when the service configures
none of them, so an unguarded service pays nothing for it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edgeway.gateway.errors import Rejection
from edgeway.gateway.shedding import admit
from edgeway.http.errors import PoolTimeout, UpstreamConnectError, UpstreamError, UpstreamTimeout
from edgeway.http.exchange import Exchange
from edgeway.http.limits import PoolLimits, UpstreamTimeouts
from edgeway.http.pool import ConnectionPool
from edgeway.resilience.balancer import LeastOutstanding, RoundRobin, make_balancer
from edgeway.resilience.errors import NoInstanceAvailable
from edgeway.resilience.guard import GuardPolicy, InstanceState, ServiceGuard, retry_after_header
from edgeway.resilience.retry import IDEMPOTENT_METHODS
from edgeway.resilience.telemetry import Telemetry

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import Service
    from edgeway.gateway.pipeline import GatewayEnv


@dataclass(eq=False, slots=True)
class Endpoint:
    """One instance of a service (Envoy's word)."""

    host: str
    port: int
    pool: ConnectionPool
    authority: bytes  # Host header value sent upstream
    outstanding: int = 0
    available: bool = True

    @property
    def label(self) -> str:
        return self.pool.instance


@dataclass(eq=False, slots=True)
class Cluster:
    name: str
    endpoints: list[Endpoint]
    balancer: RoundRobin[Endpoint] | LeastOutstanding[Endpoint]
    timeouts: UpstreamTimeouts
    pool_limits: PoolLimits
    name_bytes: bytes = field(init=False)
    guard: ServiceGuard[Endpoint] | None = None

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode()

    def pick(self) -> Endpoint:
        return self.balancer.pick(self.endpoints)

    def close(self) -> None:
        for ep in self.endpoints:
            ep.pool.close()


def make_endpoint(url: str, limits: PoolLimits) -> Endpoint:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    authority = f"{host}:{port}" if port != 80 else host
    return Endpoint(host, port, ConnectionPool(host, port, limits), authority.encode())


def make_cluster(
    name: str, urls: list[str], balancer: str, timeouts: UpstreamTimeouts, limits: PoolLimits
) -> Cluster:
    return Cluster(name, [make_endpoint(u, limits) for u in urls], make_balancer(balancer), timeouts, limits)


# --------------------------------------------------------------------------- resilience


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


def install_resilience(env: GatewayEnv) -> None:
    """Give every service that configures resilience its guard; health checks become components."""
    for name, cluster in env.clusters.items():
        policy = guard_policy(env.config.services[name])
        if policy is None:
            cluster.guard = None
            continue
        guard = ServiceGuard(name, policy, _members(cluster), Telemetry(name, env.metrics))
        cluster.guard = guard
        checker = guard.health_checker()
        if checker is not None:
            env.shared(f"health-check:{name}", lambda checker=checker: checker)  # type: ignore[misc]


def _members(cluster: Cluster) -> Callable[[], list[Endpoint]]:
    # Read the list each time: discovery may replace it.
    return lambda: cluster.endpoints


def _unavailable(cluster: Cluster, guard: ServiceGuard[Endpoint] | None) -> Rejection:
    hint = guard.retry_after_hint() if guard is not None else 1.0
    return Rejection(
        503,
        "Service Unavailable",
        f"no available instance of service {cluster.name!r}",
        headers=[(b"retry-after", retry_after_header(hint))],
    )


class ServiceCall:
    """One request's way through a guarded service: its attempts, the instances it tried, and
    whether it may be sent again. Made by :func:`begin_call`; ``finish`` must follow."""

    __slots__ = ("cluster", "ex", "guard", "state", "tried")

    def __init__(self, cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> None:
        self.cluster = cluster
        self.guard = guard
        self.ex = ex
        self.tried: list[Endpoint] = []
        self.state: InstanceState[Endpoint] | None = None

    @property
    def repeatable(self) -> bool:
        """Idempotent and bodiless: sending it again is what the client could have done itself."""
        ex = self.ex
        return ex.method in IDEMPOTENT_METHODS and ex.body.complete and ex.body.received == 0

    def pick(self) -> Endpoint:
        """The instance for the next attempt; a 503 Rejection when none is available."""
        try:
            state = self.guard.pick(self.cluster.balancer, self.tried)
        except NoInstanceAvailable:
            raise _unavailable(self.cluster, self.guard) from None
        self.state = state
        self.tried.append(state.member)
        return state.member

    def retry_after_error(self, exc: UpstreamError, remaining: float) -> float | None:
        """Backoff before a retry of an attempt that failed with ``exc``, or None for no retry."""
        never_sent = isinstance(exc, UpstreamConnectError | PoolTimeout) or (
            isinstance(exc, UpstreamTimeout) and exc.phase == "connect"
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
    """Admit a request to a guarded service: its concurrency bound, then its breaker.

    Synchronous, so the common case costs no coroutine; None when the request must wait for a
    concurrency slot (then :func:`wait_call` admits it).
    """
    limiter = guard.limiter
    if limiter is not None and not limiter.try_acquire():
        return None
    return _admitted(cluster, guard, ex)


async def wait_call(cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> ServiceCall:
    """Admit a request that waits for a concurrency slot (or is refused with 503)."""
    assert guard.limiter is not None  # begin_call only defers when there is a limiter
    await admit(guard.limiter, f"service {cluster.name!r}", guard.telemetry.shed)
    return _admitted(cluster, guard, ex)


def _admitted(cluster: Cluster, guard: ServiceGuard[Endpoint], ex: Exchange) -> ServiceCall:
    breaker = guard.breaker
    if breaker is not None and not breaker.allow():
        if guard.limiter is not None:
            guard.limiter.release()
        raise Rejection(
            503,
            "Service Unavailable",
            f"the circuit breaker of service {cluster.name!r} is open",
            headers=[(b"retry-after", retry_after_header(breaker.retry_after))],
        )
    if guard.budget is not None:
        guard.budget.record_request()
    return ServiceCall(cluster, guard, ex)
