from __future__ import annotations

import pytest

from edgeway.resilience.breaker import BreakerPolicy, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**policy: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerPolicy(**policy), name="peer", clock=clock), clock  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_and_refuses_calls() -> None:
    breaker, _ = make(consecutive_failures=3)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker, _ = make(consecutive_failures=3, failure_rate=0.9)
    for _ in range(10):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_opens_when_failure_rate_in_window_reaches_threshold() -> None:
    breaker, _ = make(consecutive_failures=100, failure_rate=0.5, window=10, min_calls=10)
    for _ in range(4):
        breaker.record_failure()
        breaker.record_success()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED  # 4 of 9, below min_calls
    breaker.record_failure()  # 5 of 10
    assert breaker.state is BreakerState.OPEN


def test_rate_window_is_a_time_window_that_forgets_old_outcomes() -> None:
    breaker, clock = make(consecutive_failures=100, failure_rate=0.5, window=10, min_calls=4)
    for _ in range(6):
        breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # 3 of 9
    clock.now += 11  # those nine calls have aged out
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # 3 calls: below min_calls
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN  # 2 of the 4 in the window (5 of 13 had it remembered)


def test_rate_counts_every_call_in_the_window_whatever_the_rate() -> None:
    breaker, clock = make(consecutive_failures=100, failure_rate=0.5, window=10, min_calls=10)
    for _ in range(1000):
        breaker.record_success()
        clock.now += 0.001
    for _ in range(99):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED  # 99 of ~1200 in the last 10 s


def test_transitions_are_reported_once_each() -> None:
    seen: list[tuple[str, str]] = []
    breaker, clock = make(consecutive_failures=1, open_for=1)
    breaker.on_change = lambda b, old, new: seen.append((old.value, new.value))
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.record_success()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_an_ignored_probe_frees_its_slot_without_deciding() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=1)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    assert not breaker.admits
    breaker.record_ignored()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admits


def test_half_open_after_pause_then_closes_on_probe_success() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=10, half_open_probes=1)
    breaker.record_failure()
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # only one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_probe_failure_reopens_for_another_pause() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_needs_all_probes_to_succeed() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=1, half_open_probes=2)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_closing_clears_history_so_one_failure_does_not_reopen() -> None:
    breaker, clock = make(consecutive_failures=2, open_for=1)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 1
    breaker.allow()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_repr_shows_name_and_state() -> None:
    breaker, _ = make()
    assert repr(breaker) == "<CircuitBreaker 'peer' closed streak=0>"


@pytest.mark.parametrize(
    "bad",
    [
        {"consecutive_failures": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"window": 0},
        {"min_calls": 0},
        {"open_for": 0},
        {"half_open_probes": 0},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**bad)  # type: ignore[arg-type]
