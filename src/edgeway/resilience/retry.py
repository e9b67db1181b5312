"""When a failed upstream call may be tried again, and after how long.

A retry is safe when the request cannot be applied twice: either it never left (the connection
could not be opened, so no byte was written), or it is idempotent (RFC 9110 §9.2.2) and has no
body, so sending it again is what the client could have done itself. A retried request goes to
another instance, after a jittered exponential backoff, only while the service's
:class:`~edgeway.resilience.budget.RetryBudget` has room and the request's deadline leaves time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from edgeway.resilience.budget import BudgetPolicy

__all__ = ["IDEMPOTENT_METHODS", "RetryPolicy", "full_jitter"]

# Methods that may be sent again (RFC 9110 §9.2.2): the one list every upstream path uses, for
# retries and for a stale pooled connection alike.
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def full_jitter(retry: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``retry`` (0 for the first): uniform in [0, min(cap, base·2^retry)].

    Full jitter spreads callers that failed together, so they do not come back together (AWS
    Architecture Blog, "Exponential Backoff And Jitter").
    """
    ceiling = min(cap, base * 2**retry)
    return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2  # in total, the first one included
    retry_on: frozenset[int] = frozenset({502, 503, 504})  # statuses that retry an idempotent request
    backoff: float = 0.025  # seconds: the ceiling of the first retry's jittered delay
    max_backoff: float = 0.25
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (the first call)")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("backoff must be >= 0 and max_backoff >= backoff")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return full_jitter(retry, self.backoff, self.max_backoff, rng)
