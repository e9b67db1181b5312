"""The instances of one peer service as the kit's clients see them: a circuit breaker per
instance, round-robin picks that skip instances whose breaker is open, and one retry budget.

The HTTP client (:class:`~edgeway.service.clients.ServiceClient`) and the gRPC client
(:mod:`edgeway.service.grpc.client`) each keep one :class:`Peers` per service they call, so a
peer that keeps failing is skipped the same way whichever protocol reaches it. Instances are
named by the string discovery gave (``http://10.0.0.5:8000``, ``grpc://10.0.0.5:50051``).
"""

from __future__ import annotations

from edgeway.resilience.breaker import BreakerPolicy, CircuitBreaker
from edgeway.resilience.budget import BudgetPolicy, RetryBudget
from edgeway.service.errors import CircuitOpenError

__all__ = ["Peers"]


class Peers:
    """See the module docstring. ``budget``: retries to this service may add at most a share of
    its calls (:class:`~edgeway.resilience.budget.RetryBudget`), so they cannot multiply an outage."""

    def __init__(
        self, service: str, breaker: BreakerPolicy | None = None, budget: BudgetPolicy | None = None
    ) -> None:
        self.service = service
        self.breaker_policy = breaker if breaker is not None else BreakerPolicy()
        self.budget = RetryBudget(budget)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._next = 0

    def breaker(self, instance: str) -> CircuitBreaker:
        """The breaker of ``instance`` (made on first sight)."""
        found = self._breakers.get(instance)
        if found is None:
            found = self._breakers[instance] = CircuitBreaker(
                self.breaker_policy, name=f"{self.service}@{instance}"
            )
        return found

    def pick(self, instances: list[str], exclude: frozenset[str] = frozenset()) -> str:
        """The next instance in turn whose breaker lets a call through (a half-open breaker gives
        it its probe slot); those in ``exclude`` (already tried by this call) are passed over while
        another one admits. Every breaker open: :class:`CircuitOpenError`, nothing sent."""
        count = len(instances)
        fallback: int | None = None
        for offset in range(count):
            index = (self._next + offset) % count
            instance = instances[index]
            if instance in exclude:
                if fallback is None and self.breaker(instance).admits:
                    fallback = index
                continue
            if self.breaker(instance).allow():
                self._next = index + 1
                return instance
        if fallback is not None and self.breaker(instances[fallback]).allow():
            self._next = fallback + 1
            return instances[fallback]
        raise CircuitOpenError(self.service, min(self.breaker(u).retry_after for u in instances))
