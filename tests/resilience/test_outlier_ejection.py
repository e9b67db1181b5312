from __future__ import annotations

import pytest

from edgeway.resilience.outlier import OutlierDetector, OutlierPolicy, OutlierTrack


def detector(**kw: float) -> OutlierDetector:
    policy = {"consecutive_failures": 3, "base_ejection": 10.0, "max_ejection": 25.0, **kw}
    return OutlierDetector(OutlierPolicy(**policy))  # type: ignore[arg-type]


def test_consecutive_failures_eject_for_the_base_time() -> None:
    d, t = detector(), OutlierTrack()
    assert d.failure(t, 0.0, population=4, ejected=0) is None
    assert d.failure(t, 0.0, 4, 0) is None
    assert d.failure(t, 0.0, 4, 0) == 10.0
    assert t.ejected
    assert not d.release_if_due(t, 9.9)
    assert d.release_if_due(t, 10.0)
    assert not t.ejected


def test_a_success_breaks_the_streak() -> None:
    d, t = detector(), OutlierTrack()
    for _ in range(10):
        d.failure(t, 0.0, 4, 0)
        d.failure(t, 0.0, 4, 0)
        d.success(t)
    assert not t.ejected


def test_each_ejection_lasts_longer_up_to_the_cap() -> None:
    d, t = detector(), OutlierTrack()
    durations = []
    now = 0.0
    for _ in range(4):
        for _ in range(3):
            seconds = d.failure(t, now, 4, 0)
        assert seconds is not None
        durations.append(seconds)
        now = t.ejected_until
        d.release_if_due(t, now)
    assert durations == [10.0, 20.0, 25.0, 25.0]


def test_the_multiplier_decays_while_the_instance_stays_well() -> None:
    d, t = detector(), OutlierTrack()
    now = 0.0
    for _ in range(2):  # two ejections: the next would last 30 s (capped 25)
        for _ in range(3):
            d.failure(t, now, 4, 0)
        now = t.ejected_until
        d.release_if_due(t, now)
    now += 20.0  # two base times in service: the count drops by two
    for _ in range(3):
        seconds = d.failure(t, now, 4, 0)
    assert seconds == 10.0


@pytest.mark.parametrize(
    ("population", "percent", "allowed"),
    [(1, 100, 0), (2, 10, 1), (2, 100, 1), (4, 50, 2), (10, 10, 1), (10, 35, 3), (3, 0, 0)],
)
def test_never_more_than_the_max_share_and_never_all(population: int, percent: float, allowed: int) -> None:
    assert OutlierPolicy(max_ejection_percent=percent).allowed_ejections(population) == allowed


def test_a_failure_over_the_share_keeps_its_streak_for_later() -> None:
    d, t = detector(), OutlierTrack()
    for _ in range(3):
        assert d.failure(t, 0.0, population=2, ejected=1) is None
    assert not t.ejected
    assert d.failure(t, 0.0, population=2, ejected=0) == 10.0  # room again: the next failure ejects


@pytest.mark.parametrize(
    "bad",
    [
        {"consecutive_failures": 0},
        {"base_ejection": 0.0},
        {"max_ejection": 1.0},
        {"max_ejection_percent": 101.0},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OutlierPolicy(**bad)  # type: ignore[arg-type]
