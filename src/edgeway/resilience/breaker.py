"""A circuit breaker: stop calling a peer that keeps failing, probe it again after a pause.

One implementation serves the gateway (a breaker per service and per instance) and the service
kit's clients (a breaker per peer instance).

States (:class:`BreakerState`):

- ``CLOSED``: calls flow. The breaker trips when ``consecutive_failures`` calls fail in a row,
  or when, over the last ``window`` seconds (with at least ``min_calls`` calls in it), the
  failure rate reaches ``failure_rate``. The first rule catches a dead peer fast; the second a
  flaky one. The window is a time window, so its meaning does not change with the request rate.
- ``OPEN``: calls are refused without touching the peer, for ``open_for`` seconds.
- ``HALF_OPEN``: up to ``half_open_probes`` calls go through at once. If that many succeed the
  breaker closes (with a clean window); any failure opens it again for another ``open_for``.

The caller asks :meth:`CircuitBreaker.allow` before a call and reports the outcome with
:meth:`record_success` / :meth:`record_failure`, or :meth:`record_ignored` when the call ended
without saying anything about the peer (the client went away). A call that was allowed must
report exactly once, or the half-open probe slot it took stays taken. All decisions are
synchronous; the clock is injectable so tests never sleep. ``on_change`` is called with
``(breaker, old, new)`` on every transition, for logs and metrics.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeway.resilience.window import RollingCounts

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The state as a number for the ``edgeway_breaker_state`` gauge: 0 closed, 1 half-open, 2 open."""
        return _GAUGE[self]


_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    window: float = 10.0  # seconds of history the failure rate is computed over
    min_calls: int = 10  # calls the window must hold before the rate can trip
    open_for: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.window <= 0:
            raise ValueError("window must be positive (seconds)")
        if self.min_calls < 1:
            raise ValueError("min_calls must be at least 1")
        if self.open_for <= 0:
            raise ValueError("open_for must be positive (seconds)")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")


StateListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self.policy = policy if policy is not None else BreakerPolicy()
        self.name = name
        self.on_change = on_change
        self._clock = clock
        self._state = BreakerState.CLOSED
        # closed: calls and failures over the window, and the current run of failures
        self._window = RollingCounts(self.policy.window, clock=clock)
        self._streak = 0
        # open: when it may be probed again
        self._opened_at = 0.0
        # half-open: probes allowed and not yet reported, and successes so far
        self._probes_in_flight = 0
        self._probe_successes = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value} streak={self._streak}>"

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.policy.open_for:
            self._to(BreakerState.HALF_OPEN)
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when not open."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.policy.open_for - (self._clock() - self._opened_at))

    @property
    def admits(self) -> bool:
        """Whether :meth:`allow` would say yes now, without taking a probe slot."""
        if self._state is BreakerState.CLOSED:  # the hot path: no clock, no lookups
            return True
        if self.state is BreakerState.OPEN:
            return False
        return self._probes_in_flight + self._probe_successes < self.policy.half_open_probes

    def allow(self) -> bool:
        """Whether a call may go to the peer now (takes a probe slot when half-open)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return False
        if self._probes_in_flight + self._probe_successes < self.policy.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        if self._state is BreakerState.CLOSED:
            self._streak = 0
            self._window.add(1, 0)
        elif self.state is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._to(BreakerState.CLOSED)

    def record_failure(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._to(BreakerState.OPEN)
        elif state is BreakerState.CLOSED:
            self._streak += 1
            self._window.add(1, 1)
            if self._streak >= self.policy.consecutive_failures or self._rate_tripped():
                self._to(BreakerState.OPEN)

    def record_ignored(self) -> None:
        """An allowed call ended without an outcome that says anything about the peer."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def _rate_tripped(self) -> bool:
        calls, failures = self._window.totals()
        return calls >= self.policy.min_calls and failures / calls >= self.policy.failure_rate

    def _to(self, state: BreakerState) -> None:
        # The one place state changes, so every transition resets the same bookkeeping.
        old, self._state = self._state, state
        self._probes_in_flight = 0
        self._probe_successes = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif state is BreakerState.CLOSED:
            self._window.clear()
            self._streak = 0
        if self.on_change is not None and old is not state:
            self.on_change(self, old, state)
