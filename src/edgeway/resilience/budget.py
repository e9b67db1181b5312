"""A retry budget: retries may add at most a share of the traffic, so they cannot multiply an outage.

Per-request retry limits do not protect a struggling service: with 3 attempts each, a service
failing every request receives 3x its normal load exactly when it can least take it. A budget
caps retries as a share of recent requests instead (Finagle's and Linkerd's design; Envoy's
retry budgets bound retries the same way): over the last ``window`` seconds, retries may be at
most ``ratio`` x requests, plus a floor of ``min_per_second`` so a service with little traffic
can still retry at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeway.resilience.window import RollingCounts

__all__ = ["BudgetPolicy", "RetryBudget"]


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    ratio: float = 0.2  # retries per request over the window
    min_per_second: float = 10.0  # retries always allowed, whatever the traffic
    window: float = 10.0  # seconds

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError("ratio must be between 0 and 1 (retries per request)")
        if self.min_per_second < 0:
            raise ValueError("min_per_second must be >= 0")
        if self.window <= 0:
            raise ValueError("window must be positive (seconds)")


class RetryBudget:
    """Counts requests and retries; :meth:`try_spend` says whether one more retry fits."""

    def __init__(
        self, policy: BudgetPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy if policy is not None else BudgetPolicy()
        self._counts = RollingCounts(self.policy.window, clock=clock)  # (requests, retries)
        self._floor = self.policy.min_per_second * self.policy.window
        self.exhausted = 0  # retries refused since start

    def __repr__(self) -> str:
        requests, retries = self._counts.totals()
        return f"<RetryBudget {retries} retries / {requests} requests>"

    def record_request(self) -> None:
        """A new request (not a retry) entered."""
        self._counts.add(1, 0)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        requests, retries = self._counts.totals()
        if retries + 1 > requests * self.policy.ratio + self._floor:
            self.exhausted += 1
            return False
        self._counts.add(0, 1)
        return True
