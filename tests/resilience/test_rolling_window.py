from __future__ import annotations

import pytest
from clock_helpers import Clock

from edgeway.resilience.window import RollingCounts


def test_totals_cover_the_last_window_only() -> None:
    clock = Clock()
    counts = RollingCounts(10.0, buckets=10, clock=clock)
    counts.add(1, 1)
    clock.now += 5
    counts.add(2, 0)
    assert counts.totals() == (3, 1)
    clock.now += 5.5  # the first add (at t=0) is now 10.5 s old
    assert counts.totals() == (2, 0)
    clock.now += 5
    assert counts.totals() == (0, 0)


def test_a_long_pause_clears_everything_in_one_step() -> None:
    clock = Clock()
    counts = RollingCounts(1.0, buckets=4, clock=clock)
    for _ in range(100):
        counts.add(1, 1)
    clock.now += 3600
    assert counts.totals() == (0, 0)
    counts.add(1, 0)
    assert counts.totals() == (1, 0)


def test_clear_and_nonsense() -> None:
    counts = RollingCounts(1.0, clock=Clock())
    counts.add(5, 5)
    counts.clear()
    assert counts.totals() == (0, 0)
    with pytest.raises(ValueError):
        RollingCounts(0)
    with pytest.raises(ValueError):
        RollingCounts(1.0, buckets=0)
