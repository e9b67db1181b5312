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
from edgeway.gateway.core.pipeline import GatewayEnv, Handler, RequestContext
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


def build_concurrency(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    rule = route.concurrency
    if rule is None:
        return None
    name = str(route.id)
    limiter = ConcurrencyLimiter(rule.policy(), name=f"route {name}")
    shed = shed_counter(env.metrics, "route", name)

    async def concurrency(ctx: RequestContext) -> None:
        if not limiter.try_acquire():
            await admit(limiter, f"route {name!r}", shed)
        try:
            await next_handler(ctx)
        finally:
            limiter.release()

    return concurrency
