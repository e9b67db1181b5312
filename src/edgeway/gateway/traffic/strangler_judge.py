"""The strangler's verdict on a stretch of traffic: is the new side doing worse than the old one
beyond the rule's limits? Pure functions of two :class:`~.split.Outcomes` windows.

- **errors**: the new side's error rate (5xx answered, or the request failing) may exceed the
  old side's by ``max_error_rate_increase`` (an old side without requests in the window counts
  as error-free);
- **latency**: the new side's mean latency may be ``max_latency_ratio`` times the old side's
  plus ``latency_slack`` (not judged when the old side had no requests in the window).

The new side is judged only once it has served ``min_requests`` in the window: a handful of
requests says nothing about a rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeway.gateway.traffic.split import Outcomes
from edgeway.gateway.traffic.strangler_config import StranglerRule

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """``judged``: the new side had enough requests; ``breach``: why it does worse (None: it
    does not)."""

    judged: bool
    breach: str | None = None

    @property
    def good(self) -> bool:
        return self.judged and self.breach is None


def judge(rule: StranglerRule, old: Outcomes, new: Outcomes) -> Verdict:
    if new.requests < rule.min_requests:
        return Verdict(False)
    new_rate = new.error_rate or 0.0
    old_rate = old.error_rate or 0.0
    if new_rate - old_rate > rule.max_error_rate_increase:
        return Verdict(
            True,
            f"error rate {new_rate:.1%} on {rule.new} vs {old_rate:.1%} on {rule.old} "
            f"(at most +{rule.max_error_rate_increase:.1%}) over {new.requests} requests",
        )
    new_mean, old_mean = new.mean_latency, old.mean_latency
    if new_mean is not None and old_mean is not None:
        limit = old_mean * rule.max_latency_ratio + float(rule.latency_slack)
        if new_mean > limit:
            return Verdict(
                True,
                f"mean latency {new_mean * 1000:.1f} ms on {rule.new} vs {old_mean * 1000:.1f} ms on "
                f"{rule.old} (at most {limit * 1000:.1f} ms) over {new.requests} requests",
            )
    return Verdict(True)
