from __future__ import annotations

import random

import pytest
from clock_helpers import Clock

from edgeway.resilience.budget import BudgetPolicy, RetryBudget
from edgeway.resilience.retry import RetryPolicy, full_jitter


def test_retries_are_capped_at_a_share_of_requests() -> None:
    budget = RetryBudget(BudgetPolicy(ratio=0.2, min_per_second=0, window=10), clock=Clock())
    for _ in range(100):
        budget.record_request()
    spent = sum(budget.try_spend() for _ in range(100))
    assert spent == 20
    assert budget.exhausted == 80


def test_the_floor_allows_retries_on_a_quiet_service() -> None:
    budget = RetryBudget(BudgetPolicy(ratio=0.2, min_per_second=1, window=10), clock=Clock())
    budget.record_request()
    assert sum(budget.try_spend() for _ in range(50)) == 10  # 1/s over 10 s, plus 0.2 of 1 request


def test_the_budget_refills_as_the_window_moves_on() -> None:
    clock = Clock()
    budget = RetryBudget(BudgetPolicy(ratio=0.5, min_per_second=0, window=10), clock=clock)
    for _ in range(10):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(10)) == 5
    clock.now += 11
    for _ in range(4):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(10)) == 2


def test_full_jitter_stays_under_its_exponential_ceiling() -> None:
    rng = random.Random(5)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0)]:
        delays = [full_jitter(retry, 0.1, 1.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed delay


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"backoff": -1.0}, {"backoff": 1.0, "max_backoff": 0.5}])
def test_retry_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"ratio": 1.5}, {"min_per_second": -1.0}, {"window": 0.0}])
def test_budget_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BudgetPolicy(**bad)
