"""The guard's decisions, with a settable clock and plain member objects (no sockets)."""

from __future__ import annotations

import logging
import random
import ssl
from dataclasses import dataclass, field

import pytest
from clock_helpers import Clock

from edgeway.observability.metrics import Metrics
from edgeway.resilience.balancer import RoundRobin
from edgeway.resilience.breaker import BreakerPolicy, BreakerState
from edgeway.resilience.budget import BudgetPolicy
from edgeway.resilience.errors import NoInstanceAvailable
from edgeway.resilience.guard import GuardPolicy, ServiceGuard, retry_after_header
from edgeway.resilience.health import HealthCheckPolicy
from edgeway.resilience.outlier import OutlierPolicy
from edgeway.resilience.retry import RetryPolicy
from edgeway.resilience.telemetry import Telemetry


@dataclass(eq=False)
class Inst:
    port: int
    host: str = "127.0.0.1"
    outstanding: int = 0
    available: bool = True

    # A field, not a property: the protocols it stands for (Member, Probed) declare a plain
    # attribute, which a read-only property does not satisfy.
    authority: bytes = field(init=False)
    tls: ssl.SSLContext | None = None  # plaintext
    server_hostname: str = field(init=False)

    def __post_init__(self) -> None:
        self.authority = f"{self.host}:{self.port}".encode()
        self.server_hostname = self.host

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def make(
    policy: GuardPolicy, n: int = 2, metrics: Metrics | None = None
) -> tuple[ServiceGuard[Inst], list[Inst], Clock]:
    clock = Clock()
    members = [Inst(9000 + i) for i in range(n)]
    guard = ServiceGuard(
        "svc", policy, lambda: members, Telemetry("svc", metrics), clock=clock, rng=random.Random(1)
    )
    return guard, members, clock


BREAKER = BreakerPolicy(consecutive_failures=3, open_for=5.0, half_open_probes=1)


def test_an_open_instance_breaker_takes_the_instance_out_until_its_pause_ends() -> None:
    guard, (a, b), clock = make(GuardPolicy(instance_breaker=BREAKER))
    rr: RoundRobin[Inst] = RoundRobin()
    for _ in range(3):
        guard.report(guard.state(a), 0, error=True)
    assert not a.available
    assert {guard.pick(rr).member.port for _ in range(6)} == {b.port}
    clock.now += 5.0
    guard.state(a).refresh()  # what the timer does when the pause ends
    assert a.available  # half-open: one probe may go
    probe = guard.pick(rr, tried=[b])
    assert probe.member is a
    assert not a.available  # its one probe slot is taken
    guard.report(probe, 200, error=False)
    assert a.available
    assert probe.breaker is not None
    assert probe.breaker.state is BreakerState.CLOSED


def test_failure_statuses_count_and_other_statuses_do_not() -> None:
    guard, (a, _), _ = make(GuardPolicy(instance_breaker=BREAKER, breaker_statuses=frozenset({503})))
    state = guard.state(a)
    for _ in range(5):
        guard.report(state, 500, error=False)
        guard.report(state, 404, error=False)
    assert a.available
    for _ in range(3):
        guard.report(state, 503, error=False)
    assert not a.available


def test_no_instance_left_raises_and_hints_when_to_come_back() -> None:
    guard, members, clock = make(GuardPolicy(instance_breaker=BREAKER))
    for m in members:
        for _ in range(3):
            guard.report(guard.state(m), 0, error=True)
    with pytest.raises(NoInstanceAvailable):
        guard.pick(RoundRobin())
    clock.now += 1.5
    assert guard.retry_after_hint() == pytest.approx(3.5)
    assert retry_after_header(3.5) == b"4"
    assert retry_after_header(0.0) == b"1"


def test_outlier_ejection_keeps_at_least_one_instance() -> None:
    policy = GuardPolicy(outlier=OutlierPolicy(consecutive_failures=2, max_ejection_percent=100))
    guard, (a, b), clock = make(policy)
    for _ in range(4):
        guard.report(guard.state(a), 502, error=False)
        guard.report(guard.state(b), 0, error=True)
    assert [a.available, b.available].count(False) == 1
    ejected = a if not a.available else b
    clock.now += 30.0
    guard.state(ejected).refresh()
    assert ejected.available


def test_health_verdicts_follow_the_thresholds() -> None:
    policy = GuardPolicy(health=HealthCheckPolicy(healthy_threshold=2, unhealthy_threshold=2))
    guard, (a, _), _ = make(policy)
    guard.health_result(a, True, "200")
    assert a.available
    guard.health_result(a, False, "answered 503")
    assert a.available  # one failure is not enough once checked
    guard.health_result(a, False, "answered 503")
    assert not a.available
    guard.health_result(a, True, "200")
    assert not a.available
    guard.health_result(a, True, "200")
    assert a.available


def test_the_owner_is_told_once_when_a_check_turns_an_instance_unhealthy() -> None:
    """The hook that ends the attempts in flight there: once per transition, with the reason,
    after the instance left the balancer (a retry it triggers must not pick it again)."""
    guard, (a, b), _ = make(GuardPolicy(health=HealthCheckPolicy(unhealthy_threshold=2)))
    told: list[tuple[int, str, bool]] = []
    guard.on_unhealthy = lambda m, reason: told.append((m.port, reason, m.available))
    guard.health_result(a, True, "200")
    guard.health_result(a, False, "no answer within 1s")
    assert told == []  # one failure is not a verdict
    guard.health_result(a, False, "no answer within 1s")
    guard.health_result(a, False, "no answer within 1s")
    guard.health_result(b, True, "200")
    assert told == [(a.port, "no answer within 1s", False)]


def test_the_first_check_decides_alone() -> None:
    guard, (a, _), _ = make(GuardPolicy(health=HealthCheckPolicy()))
    guard.health_result(a, False, "cannot connect")
    assert not a.available


def test_in_panic_ejected_and_unhealthy_instances_serve_but_an_open_breaker_does_not() -> None:
    policy = GuardPolicy(
        instance_breaker=BREAKER,
        outlier=OutlierPolicy(consecutive_failures=1, max_ejection_percent=100),
        outlier_statuses=frozenset({502}),
        health=HealthCheckPolicy(healthy_threshold=1, unhealthy_threshold=1),
    )
    guard, (a, b, c, d), _ = make(policy, n=4)
    guard.report(guard.state(a), 502, error=False)  # ejected
    guard.health_result(b, False, "no answer within 1s")
    assert (a.available, b.available, guard.panic) == (False, False, False)  # 2 of 4: 50 %, not below
    for _ in range(3):
        guard.report(guard.state(c), 500, error=False)  # its breaker opens; 500 does not eject
    breaker = guard.state(c).breaker
    assert breaker is not None
    assert not breaker.admits
    guard.health_result(d, False, "no answer within 1s")
    # d down too: 1 of 4 healthy (c, whose breaker is open, counts: it passes its checks).
    assert guard.panic
    assert [m.available for m in (a, b, c, d)] == [True, True, False, True]
    guard.health_result(b, True, "200")
    guard.health_result(d, True, "200")
    assert not guard.panic
    assert [m.available for m in (a, b, c, d)] == [False, True, False, True]


def test_an_instance_that_goes_down_in_panic_keeps_its_attempts_in_flight() -> None:
    guard, (a, b), _ = make(GuardPolicy(health=HealthCheckPolicy(unhealthy_threshold=1)))
    told: list[int] = []
    guard.on_unhealthy = lambda m, _reason: told.append(m.port)
    guard.health_result(a, False, "no answer within 1s")
    guard.health_result(b, False, "no answer within 1s")  # 0 of 2: panic
    assert (guard.panic, a.available, b.available) == (True, True, True)
    assert told == [a.port]  # only a, which left the balancer before the panic


def test_panic_is_recounted_when_instances_leave() -> None:
    guard, members, _ = make(GuardPolicy(health=HealthCheckPolicy(unhealthy_threshold=1)), n=3)
    down, also_down, up = members
    guard.health_result(down, False, "answered 503")
    guard.health_result(also_down, False, "answered 503")
    assert (guard.panic, also_down.available) == (True, True)  # 1 of 3 healthy
    members.remove(down)  # discovery lost it (or an operator drained it)
    guard.forget(down)
    guard.recount()
    assert not guard.panic  # 1 of the 2 left: 50 %, not below
    assert (also_down.available, up.available) == (False, True)


def test_a_threshold_of_zero_never_panics_and_a_bad_one_is_refused() -> None:
    policy = GuardPolicy(health=HealthCheckPolicy(unhealthy_threshold=1), panic_threshold=0)
    guard, (a, b), _ = make(policy)
    guard.health_result(a, False, "cannot connect")
    guard.health_result(b, False, "cannot connect")
    assert (guard.panic, a.available, b.available) == (False, False, False)
    with pytest.raises(ValueError, match="between 0 and 100"):
        GuardPolicy(panic_threshold=101)


def retrying(attempts: int = 3, ratio: float = 1.0, floor: float = 0.0) -> GuardPolicy:
    budget = BudgetPolicy(ratio=ratio, min_per_second=floor, window=10)
    return GuardPolicy(retry=RetryPolicy(attempts=attempts, backoff=0.01, max_backoff=0.1, budget=budget))


def test_a_retry_needs_another_available_instance() -> None:
    guard, (a, b), _ = make(retrying())
    assert guard.budget is not None
    guard.budget.record_request()
    assert guard.retry_delay(0, 10.0, [a], "error") is not None
    b.available = False
    assert guard.retry_delay(0, 10.0, [a], "error") is None


def test_a_retry_stops_at_the_attempt_limit_the_budget_and_the_deadline() -> None:
    guard, (a, *_), _ = make(retrying(attempts=2, ratio=0.5), n=3)
    assert guard.budget is not None
    guard.budget.record_request()
    guard.budget.record_request()
    assert guard.retry_delay(1, 10.0, [a], "error") is None  # attempt 2 of 2 was the last
    assert guard.retry_delay(0, 0.0, [a], "error") is None  # no time left for the backoff
    assert guard.retry_delay(0, 10.0, [a], "error") is not None  # 1 retry of 2 requests x 0.5
    assert guard.retry_delay(0, 10.0, [a], "error") is None  # budget spent
    assert guard.budget.exhausted == 1


def test_the_service_breaker_counts_final_outcomes() -> None:
    policy = GuardPolicy(service_breaker=BreakerPolicy(consecutive_failures=2, open_for=5))
    guard, _, _ = make(policy)
    assert guard.breaker is not None
    guard.finish(0, error=False)  # the client left: says nothing
    guard.finish(200, error=False)
    guard.finish(502, error=False)
    guard.finish(0, error=True)
    assert guard.breaker.state is BreakerState.OPEN


def test_breaker_state_is_exported_and_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics("gw")
    guard, (a, _), _ = make(GuardPolicy(instance_breaker=BREAKER), metrics=metrics)
    state = guard.state(a)
    with caplog.at_level(logging.INFO, logger="edgeway.resilience"):
        for _ in range(3):
            guard.report(state, 0, error=True)
    text = metrics.exposition()[0].decode()
    assert 'edgeway_breaker_state{instance="127.0.0.1:9000",service="svc"} 2.0' in text
    assert 'edgeway_breaker_transitions_total{instance="127.0.0.1:9000",service="svc",to="open"} 1.0' in text
    assert 'edgeway_instance_available{instance="127.0.0.1:9000",service="svc"} 0.0' in text
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "breaker"]
    assert record.levelno == logging.WARNING
    assert record.__dict__["state"] == "open"
    assert record.__dict__["upstream_service"] == "svc"
    assert record.__dict__["instance"] == "127.0.0.1:9000"
    guard.forget(a)
    assert "9000" not in metrics.exposition()[0].decode().split("edgeway_breaker_transitions_total")[0]
