"""Load shedding: a bound on concurrent requests per route.

Over ``concurrency.max_concurrent`` requests in flight on the route, a request waits in a small
bounded queue (``queue``, at most ``max_wait``) or is refused at once with 503 and
``Retry-After`` (:mod:`edgeway.resilience.concurrency`). The filter runs innermost, right
around the action, so cache hits and refused auth never take a slot. A service-wide bound
(``concurrency`` on a service) is applied by the proxy's guard instead.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, GatewayEnv, RequestContext, Verdict
from edgeway.resilience.concurrency import ConcurrencyLimiter
from edgeway.resilience.errors import Overloaded
from edgeway.resilience.guard import retry_after_header
from edgeway.resilience.telemetry import shed_counter


async def admit(limiter: ConcurrencyLimiter, what: str, shed: Callable[[], None]) -> None:
    """Take a slot of ``limiter`` (waiting in its queue if it has one) or refuse with 503."""
    try:
        await limiter.acquire()
    except Overloaded as exc:
        shed()
        raise Rejection(
            503,
            "Service Unavailable",
            f"{what} is at its concurrency limit: {exc}",
            headers=[(b"retry-after", retry_after_header(exc.retry_after))],
        ) from None


class ConcurrencyFilter:
    """Takes a slot of the route's bound at once when one is free, else waits in a task."""

    __slots__ = ("limiter", "name", "shed")

    def __init__(self, limiter: ConcurrencyLimiter, name: str, shed: Callable[[], None]) -> None:
        self.limiter = limiter
        self.name = name
        self.shed = shed

    def on_request(self, ctx: RequestContext) -> Verdict:
        if not self.limiter.try_acquire():
            return self._wait(ctx)
        ctx.defer(self._release)
        return ADMIT

    async def _wait(self, ctx: RequestContext) -> None:
        await admit(self.limiter, f"route {self.name!r}", self.shed)
        ctx.defer(self._release)

    def _release(self, failure: BaseException | None) -> None:
        self.limiter.release()


def build_concurrency(route: Route, env: GatewayEnv) -> ConcurrencyFilter | None:
    rule = route.concurrency
    if rule is None:
        return None
    name = str(route.id)
    limiter = ConcurrencyLimiter(rule.policy(), name=f"route {name}")
    return ConcurrencyFilter(limiter, name, shed_counter(env.metrics, "route", name))
