"""Outlier ejection (passive health): an instance that keeps failing leaves the balancer for a while.

After ``consecutive_failures`` failed calls in a row (5xx answers or gateway failures: refused,
reset, timed out) an instance is ejected for ``base_ejection`` x the number of times it has been
ejected, capped at ``max_ejection``: a flapping instance stays out longer each time. The count
decays by one for every ``base_ejection`` the instance then spends back in service, so an
instance that recovered for good is not punished forever for an old incident (Envoy's outlier
detection works the same way).

Ejection never takes out more than ``max_ejection_percent`` of a service's instances at once,
and never the last one: when everything fails, a failing instance is better than none, and the
circuit breaker is the tool that fails fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OutlierDetector", "OutlierPolicy", "OutlierTrack"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5
    base_ejection: float = 30.0  # seconds
    max_ejection: float = 300.0  # seconds
    max_ejection_percent: float = 50.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if self.base_ejection <= 0 or self.max_ejection < self.base_ejection:
            raise ValueError("base_ejection must be positive and max_ejection >= base_ejection")
        if not 0.0 <= self.max_ejection_percent <= 100.0:
            raise ValueError("max_ejection_percent must be between 0 and 100")

    def allowed_ejections(self, population: int) -> int:
        """How many of ``population`` instances may be out at once: at least one, never all."""
        if population <= 1 or self.max_ejection_percent == 0:
            return 0
        return min(population - 1, max(1, math.floor(population * self.max_ejection_percent / 100)))


class OutlierTrack:
    """One instance's record: its failure streak and ejection history."""

    __slots__ = ("ejected_until", "ejections", "returned_at", "streak")

    def __init__(self) -> None:
        self.streak = 0
        self.ejections = 0
        self.ejected_until = 0.0  # 0 when in service
        self.returned_at: float | None = None

    def __repr__(self) -> str:
        return f"<OutlierTrack streak={self.streak} ejections={self.ejections}>"

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0


class OutlierDetector:
    def __init__(self, policy: OutlierPolicy) -> None:
        self.policy = policy

    def success(self, track: OutlierTrack) -> None:
        track.streak = 0

    def failure(self, track: OutlierTrack, now: float, population: int, ejected: int) -> float | None:
        """Count a failure; the ejection's length in seconds when it ejects the instance now."""
        track.streak += 1
        if track.ejected or track.streak < self.policy.consecutive_failures:
            return None
        if ejected >= self.policy.allowed_ejections(population):
            return None  # the streak stays, so the next failure tries again once room frees up
        if track.returned_at is not None:
            healthy_for = now - track.returned_at
            track.ejections = max(0, track.ejections - int(healthy_for // self.policy.base_ejection))
        track.ejections += 1
        duration = min(self.policy.max_ejection, self.policy.base_ejection * track.ejections)
        track.ejected_until = now + duration
        track.streak = 0
        return duration

    def release_if_due(self, track: OutlierTrack, now: float) -> bool:
        """Bring an ejected instance back once its time is up; True when it came back."""
        if track.ejected and now >= track.ejected_until:
            track.ejected_until = 0.0
            track.returned_at = now
            return True
        return False
