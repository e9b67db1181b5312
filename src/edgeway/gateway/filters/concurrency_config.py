"""Config of load shedding (``concurrency`` on a route, and on a service): a bound on concurrent
requests, compiled to :class:`edgeway.resilience.concurrency.ConcurrencyPolicy`."""

from __future__ import annotations

from pydantic import Field, model_validator

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration
from edgeway.resilience.concurrency import ConcurrencyPolicy


class ConcurrencyRule(StrictModel):
    """Load shedding: a bound on concurrent requests; beyond it 503 with Retry-After.

    Requests over `max_concurrent` wait in a queue of at most `queue` entries for at most
    `max_wait`, or are refused at once when the queue is full; never an unbounded queue.
    """

    max_concurrent: int = Field(ge=1, description="Requests in flight at once.")
    queue: int = Field(0, ge=0, description="Requests that may wait for a slot beyond `max_concurrent`.")
    max_wait: Duration = Field(
        0.0, ge=0, description="How long a queued request waits for a slot before it is refused."
    )
    retry_after: Duration = Field(
        1.0, gt=0, description="The `Retry-After` given to refused requests (rounded up to seconds)."
    )

    @model_validator(mode="after")
    def _queue_has_wait(self) -> ConcurrencyRule:
        problems: list[tuple[Loc, str]] = []
        if self.queue > 0 and self.max_wait == 0:
            problems.append((("max_wait",), "a queue needs max_wait > 0, or requests would wait forever"))
        if self.queue == 0 and self.max_wait > 0:
            problems.append((("queue",), "max_wait is set but queue is 0: nothing would ever wait"))
        if problems:
            raise LocatedProblemsError(problems)
        return self

    def policy(self) -> ConcurrencyPolicy:
        return ConcurrencyPolicy(
            limit=self.max_concurrent,
            queue=self.queue,
            max_wait=float(self.max_wait),
            retry_after=float(self.retry_after),
        )
