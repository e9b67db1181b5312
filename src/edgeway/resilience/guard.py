"""The resilience of one service: breakers, outlier ejection, health verdicts, retries and shedding.

A :class:`ServiceGuard` holds the service-wide parts (a breaker for the service as a whole, the
retry budget, the concurrency bound) and an :class:`InstanceState` per instance. An instance
state combines what may take the instance out of the balancer — its own breaker, an outlier
ejection, a failing active health check — into the one flag the balancer reads,
``member.available``. That flag is recomputed when one of its inputs changes (an outcome, a
health verdict, a timer at the end of an open breaker's pause or an ejection), never per pick,
so balancing costs the same with or without resilience configured.

The *healthy panic threshold* (Envoy's) guards against the health signals themselves: when the
share of a service's instances that pass their health checks and are not ejected falls below
``panic_threshold`` percent, the guard is *in panic* and ignores those two signals — every
instance whose breaker admits is in the balancer again. A machine starved of CPU misses its
checks on every instance at once although they still answer; a 503 for the whole service would
then be worse than a request that may be slow. Breakers still apply (they judge answers, not
probes), and instances that left the cluster (removed by discovery, drained by an operator) are
not members at all, so they neither count nor come back.

The guard knows nothing of HTTP: the caller (the gateway's proxy) classifies each attempt as a
gateway error, a status, or nothing to report (the client went away), and decides whether a
retry is *safe*; the guard decides whether it is *allowed* (attempts left, another instance
available, budget, deadline) and how long to back off.

Members are any objects with ``outstanding``, ``available``, ``host``, ``port``, ``authority``
and ``label``: the gateway's endpoints. The instance list may change underneath (discovery);
states are created on first sight, and :meth:`ServiceGuard.forget` drops a removed one.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from edgeway.resilience.balancer import Balancer
from edgeway.resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from edgeway.resilience.budget import RetryBudget
from edgeway.resilience.concurrency import ConcurrencyLimiter, ConcurrencyPolicy
from edgeway.resilience.health import HealthChecker, HealthCheckPolicy, HealthTrack, Probed
from edgeway.resilience.outlier import OutlierDetector, OutlierPolicy, OutlierTrack
from edgeway.resilience.retry import RetryPolicy
from edgeway.resilience.telemetry import SERVICE_WIDE, Telemetry

__all__ = ["GuardPolicy", "InstanceState", "Member", "ServiceGuard", "retry_after_header"]

DEFAULT_FAILURE_STATUSES = frozenset({500, 502, 503, 504})


class Member(Protocol):
    outstanding: int
    available: bool
    host: str
    port: int
    authority: bytes

    @property
    def label(self) -> str: ...

    @property
    def tls(self) -> ssl.SSLContext | None: ...

    @property
    def server_hostname(self) -> str: ...


M = TypeVar("M", bound=Member)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Everything a service configures; a part left None is off."""

    instance_breaker: BreakerPolicy | None = None
    service_breaker: BreakerPolicy | None = None
    breaker_statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES
    retry: RetryPolicy | None = None
    outlier: OutlierPolicy | None = None
    outlier_statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES
    health: HealthCheckPolicy | None = None
    concurrency: ConcurrencyPolicy | None = None
    # Percent of healthy instances below which health and ejection are ignored; 0: never.
    panic_threshold: float = 50.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.panic_threshold <= 100.0:
            raise ValueError(f"panic_threshold must be between 0 and 100, not {self.panic_threshold:g}")


class InstanceState(Generic[M]):
    """Why one instance is in or out of the balancer."""

    __slots__ = ("_guard", "_timer", "breaker", "health", "healthy", "member", "outlier")

    def __init__(self, guard: ServiceGuard[M], member: M) -> None:
        self._guard = guard
        self.member = member
        policy = guard.policy
        label = member.label
        self.breaker: CircuitBreaker | None = None
        if policy.instance_breaker is not None:
            self.breaker = CircuitBreaker(
                policy.instance_breaker, name=f"{guard.service}@{label}", clock=guard.clock
            )
            # A transition (open, half-open, closed) changes whether the instance takes traffic.
            guard.telemetry.watch_breaker(label, self.breaker, then=self.refresh)
        self.outlier = OutlierTrack() if policy.outlier is not None else None
        self.health = HealthTrack() if policy.health is not None else None
        self._timer: asyncio.TimerHandle | None = None
        # Passes its health checks and is not ejected (as of the last refresh): what the share
        # of healthy instances, and so the guard's panic, counts.
        self.healthy = True
        guard.telemetry.watch_available(label, lambda: self.member.available)
        health = self.health
        if health is not None:
            guard.telemetry.watch_health(label, lambda: health.healthy)
        if self.outlier is not None:
            guard.telemetry.watch_ejection(label, lambda: self.ejected)

    def __repr__(self) -> str:
        return f"<InstanceState {self.member.label} available={self.member.available}>"

    @property
    def ejected(self) -> bool:
        return self.outlier is not None and self.outlier.ejected

    def refresh(self) -> None:
        """Recompute ``member.available``; arm a timer for the moment it may change by itself."""
        guard = self._guard
        now = guard.clock()
        available = True
        wake: float | None = None
        track = self.outlier
        if track is not None and track.ejected:
            assert guard.detector is not None  # a track exists only when outlier ejection is on
            if guard.detector.release_if_due(track, now):
                guard.telemetry.returned(self.member.label)
            else:
                available = False
                wake = track.ejected_until - now
        if self.health is not None and not self.health.healthy:
            available = False
        changed = available is not self.healthy
        self.healthy = available
        available = available or guard.panic  # in panic, health and ejection are ignored
        breaker = self.breaker
        if breaker is not None and not breaker.admits:
            available = False
            pause = breaker.retry_after
            if pause > 0:
                wake = pause if wake is None else min(wake, pause)
        self.member.available = available
        if wake is not None:
            self._wake_in(wake)
        if changed:
            guard.recount()

    def _wake_in(self, seconds: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test): the next refresh will see the time
            return
        when = loop.time() + seconds + 0.001
        timer = self._timer
        if (
            timer is not None
            and not timer.cancelled()
            and timer.when() <= when
            and timer.when() > loop.time()
        ):
            return  # an earlier wake-up is already set; it re-arms if still needed
        if timer is not None:
            timer.cancel()
        self._timer = loop.call_at(when, self._woken)

    def _woken(self) -> None:
        self._timer = None
        self.refresh()

    def take(self) -> bool:
        """Claim the instance for one attempt (a probe slot when its breaker is half-open)."""
        if self.breaker is None:
            return True
        allowed = self.breaker.allow()
        if not self.breaker.admits:
            self.refresh()
        return allowed

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def unavailable_for(self) -> float:
        """A guess of how long until the instance takes traffic again (for Retry-After)."""
        guard = self._guard
        waits = [0.0]
        if self.outlier is not None and self.outlier.ejected:
            waits.append(self.outlier.ejected_until - guard.clock())
        if self.breaker is not None:
            waits.append(self.breaker.retry_after)
        if self.health is not None and not self.health.healthy and guard.policy.health is not None:
            waits.append(guard.policy.health.interval)
        return max(waits)


class ServiceGuard(Generic[M]):
    def __init__(
        self,
        service: str,
        policy: GuardPolicy,
        members: Callable[[], Sequence[M]],
        telemetry: Telemetry,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.policy = policy
        self.members = members
        self.telemetry = telemetry
        self.clock = clock
        self._rng = rng or random.Random()
        self._states: dict[int, InstanceState[M]] = {}
        self.breaker: CircuitBreaker | None = None
        if policy.service_breaker is not None:
            self.breaker = CircuitBreaker(policy.service_breaker, name=service, clock=clock)
            telemetry.watch_breaker(SERVICE_WIDE, self.breaker)
        self.budget = RetryBudget(policy.retry.budget, clock) if policy.retry is not None else None
        self.limiter = (
            ConcurrencyLimiter(policy.concurrency, name=f"service {service}")
            if policy.concurrency is not None
            else None
        )
        self.detector = OutlierDetector(policy.outlier) if policy.outlier is not None else None
        self.retry_on = policy.retry.retry_on if policy.retry is not None else frozenset()
        self.panic = False  # too few healthy instances: health and ejection are ignored
        telemetry.watch_panic(lambda: self.panic)
        # Told (member, reason) when a health check turns an instance unhealthy, after it left
        # the balancer: the caller ends the attempts still waiting on it (see resilient.py).
        self.on_unhealthy: Callable[[M, str], None] | None = None

    def __repr__(self) -> str:
        return f"<ServiceGuard {self.service!r} instances={len(self._states)}>"

    # -- instances -----------------------------------------------------------------------------
    def state(self, member: M) -> InstanceState[M]:
        found = self._states.get(id(member))
        if found is None or found.member is not member:
            found = self._states[id(member)] = InstanceState(self, member)
        return found

    def refresh_all(self) -> None:
        """Set every current member's flag from this guard's own view (a new guard taking over
        instances that a previous one, e.g. before a live reload, may have taken out)."""
        for member in self.members():
            self.state(member).refresh()

    def recount(self) -> None:
        """Enter or leave panic from the current share of healthy instances; when that changes,
        every instance's flag is recomputed. Called when an instance's health changes and when
        instances join or leave."""
        threshold = self.policy.panic_threshold
        members = self.members()
        healthy = sum(1 for m in members if self.state(m).healthy)
        # Below the threshold, strictly (Envoy's rule): at 50 %, one healthy instance of two is
        # not panic. No instances at all: nothing to balance over, so no panic either.
        panic = bool(members) and healthy * 100 < threshold * len(members)
        if panic is self.panic:
            return
        self.panic = panic
        self.telemetry.panic_changed(panic, healthy, len(members), threshold)
        for member in members:
            self.state(member).refresh()

    def close(self) -> None:
        """Stop every timer: this guard no longer decides anything (its metric series stay, a
        successor may own them now)."""
        for state in self._states.values():
            state.close()

    def forget(self, member: M) -> None:
        """An instance left the service: drop its state, timers and metric series."""
        found = self._states.pop(id(member), None)
        if found is not None and found.member is member:
            found.close()
            self.telemetry.forget(member.label)

    def pick(self, balancer: Balancer[M], tried: Collection[M] = ()) -> InstanceState[M]:
        """An available instance not tried yet, claimed for one attempt.

        Raises :class:`NoInstanceAvailable` when there is none.
        """
        members = self.members()
        while True:
            state = self.state(balancer.pick(members, tried))
            if state.take():
                return state
            # Lost the last probe slot: take() marked it unavailable, so the next pick skips it.

    def retry_after_hint(self) -> float:
        """Seconds until some instance is likely to take traffic again (at least 1)."""
        waits = [self.state(m).unavailable_for() for m in self.members()]
        return max(1.0, min(waits, default=1.0))

    def health_checker(self) -> HealthChecker | None:
        """The active health checks of this service, as a component; None when not configured."""
        policy = self.policy.health
        if policy is None:
            return None

        def result(target: Probed, passed: bool, reason: str) -> None:
            self.health_result(target, passed, reason)

        return HealthChecker(policy, self.members, result)

    def health_result(self, target: Probed, passed: bool, reason: str) -> None:
        member: M = target  # type: ignore[assignment]  # the checker probes this guard's members
        state = self.state(member)
        if state.health is None or self.policy.health is None:
            return
        self.telemetry.checked(member.label, passed)
        changed = state.health.record(passed, reason, self.policy.health)
        if changed:
            self.telemetry.health_changed(member.label, state.health.healthy, reason)
        state.refresh()  # every time: cheap at check rates, and it repairs a flag another wrote
        if changed and not state.health.healthy and not member.available and self.on_unhealthy is not None:
            # Only a health check says the instance stopped answering: a breaker or an
            # ejection judges answers already received, and the attempts in flight may be fine.
            # In panic the instance still serves, so its attempts in flight are left alone.
            self.on_unhealthy(member, reason)

    # -- outcomes --------------------------------------------------------------------------------
    def report(self, state: InstanceState[M], status: int, error: bool) -> None:
        """The outcome of one attempt on ``state``'s instance.

        ``error``: a gateway failure (refused, reset, timed out, unparseable); otherwise
        ``status`` is the response status, or 0 when the attempt says nothing about the
        instance (the client went away first).
        """
        breaker = state.breaker
        refresh = False
        if breaker is not None:
            # Transitions refresh the instance themselves (watch_breaker); a half-open probe's
            # outcome also frees its slot, which changes whether the instance admits more.
            refresh = breaker.state is BreakerState.HALF_OPEN
            _record(breaker, status, error, self.policy.breaker_statuses)
        track = state.outlier
        if track is not None and (error or status):
            assert self.detector is not None
            if error or status in self.policy.outlier_statuses:
                members = self.members()
                ejected = sum(1 for m in members if self.state(m).ejected)
                seconds = self.detector.failure(track, self.clock(), len(members), ejected)
                if seconds is not None:
                    self.telemetry.ejected(state.member.label, seconds, track.ejections)
                    refresh = True
            else:
                self.detector.success(track)
        if refresh:
            state.refresh()

    def finish(self, status: int, error: bool) -> None:
        """The final outcome of a request on the service (after any retries)."""
        if self.breaker is not None:
            _record(self.breaker, status, error, self.policy.breaker_statuses)

    # -- retries -------------------------------------------------------------------------------
    def retry_delay(self, attempt: int, remaining: float, tried: Collection[M], reason: str) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when no retry is allowed.

        ``attempt`` counts from 0; ``remaining`` is the request's budget left; ``tried`` the
        instances already used (a retry goes elsewhere). The caller has checked it is safe.
        """
        retry = self.policy.retry
        if retry is None or self.budget is None or attempt + 1 >= retry.attempts:
            return None
        if not any(m.available and m not in tried for m in self.members()):
            return None
        delay = retry.delay(attempt, self._rng)
        if delay >= remaining:
            return None
        if not self.budget.try_spend():
            self.telemetry.budget_exhausted()
            return None
        self.telemetry.retried(reason)
        return delay


def _record(breaker: CircuitBreaker, status: int, error: bool, failures: frozenset[int]) -> None:
    if error or status in failures:
        breaker.record_failure()
    elif status:
        breaker.record_success()
    else:
        breaker.record_ignored()


def retry_after_header(seconds: float) -> bytes:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return b"%d" % max(1, math.ceil(seconds))
