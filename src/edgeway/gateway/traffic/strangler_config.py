"""Config of the progressive strangler: ``proxy.strangler`` on a route (move it from an old
service to a new one in steps, with automatic rollback) and ``strangler_store`` at the top level
(where the gateways of a fleet keep each rule's step, so they agree on it). What runs it is
:mod:`edgeway.gateway.traffic.strangler`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration

__all__ = ["StranglerRule", "StranglerStore"]


class StranglerRule(StrictModel):
    """Move a route from an old service (the monolith) to a new one in steps. The gateway
    advances a step once the new side has served `step_duration` at it with its error rate and
    latency within the limits compared with the old side's, and rolls back by itself when they
    are not. State and controls: the admin API's `/strangler`."""

    old: str = Field(description="The service the route leaves (the legacy monolith).")
    new: str = Field(description="The service the route moves to.")
    steps: list[float] = Field(
        default_factory=lambda: [1.0, 10.0, 50.0, 100.0],
        min_length=1,
        description="The new side's share of the route's requests at each step (percent), "
        "increasing, the last 100. Before the first step it takes none.",
    )
    step_duration: Duration = Field(
        300.0, gt=0, description="Time at a step, within the limits, before the next one."
    )
    min_requests: int = Field(
        20,
        ge=1,
        description="Requests the new side must have served in the window before it is judged "
        "(a rollback) or in the step (an advance).",
    )
    window: Duration = Field(
        30.0, gt=0, description="The recent stretch the two sides are compared over for a rollback."
    )
    max_error_rate_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description="How much the new side's error rate (5xx or failed, 0-1) may exceed the old "
        "side's; beyond it, the rule rolls back.",
    )
    max_latency_ratio: float = Field(
        2.0,
        ge=1,
        description="How many times the old side's mean latency the new side's may be (plus "
        "`latency_slack`); beyond it, the rule rolls back.",
    )
    latency_slack: Duration = Field(
        0.005, ge=0, description="Added to the latency limit, so that sub-millisecond noise is not a breach."
    )
    check_interval: Duration = Field(
        1.0, gt=0, description="How often the gateway judges the sides and reads the shared step."
    )
    rollback_to: Literal["last_good", "start"] = Field(
        "last_good",
        description="Where an automatic rollback goes: the last step judged good (the one before), "
        "or the start (the old side takes everything).",
    )
    start: Literal["running", "paused"] = Field(
        "running", description="A new rule's status: `paused` waits for an operator's `advance`."
    )

    @model_validator(mode="after")
    def _check(self) -> StranglerRule:
        problems: list[tuple[Loc, str]] = []
        if self.old == self.new:
            problems.append((("new",), "the new service must differ from the old one"))
        for index, step in enumerate(self.steps):
            if not 0 < step <= 100:
                problems.append(
                    (("steps", index), f"a step is a percentage above 0 and at most 100, not {step:g}")
                )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            problems.append((("steps",), "steps must increase"))
        if self.steps and self.steps[-1] != 100:
            problems.append(
                (("steps",), f"the last step must be 100 (the move complete), not {self.steps[-1]:g}")
            )
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def definition(self) -> dict[str, object]:
        """What identifies the rule in the shared store: a stored state for another definition is
        not this rule's (the file changed) and is started afresh."""
        return {"old": self.old, "new": self.new, "steps": list(self.steps)}


class StranglerStore(StrictModel):
    """Where every strangler rule's step is kept. Gateways (and workers) sharing a store agree on
    each rule's step: each reads it every `check_interval`, and changes it by compare-and-set."""

    backend: Literal["memory", "file", "redis"] = Field(
        "memory",
        description="`memory`: this gateway process only (one worker); `file`: a JSON file every "
        "gateway on the host shares (locked); `redis`: shared by every gateway using the Redis.",
    )
    path: str | None = Field(None, description="The `file` backend's file (created if missing).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the `redis` backend.")
    key_prefix: str = Field("edgeway:strangler:", description="Prefix of each rule's key in Redis.")
    timeout: Duration = Field(
        1.0, gt=0, description="A store call slower than this fails (and is tried again)."
    )

    @model_validator(mode="after")
    def _check(self) -> StranglerStore:
        if self.backend == "file" and not self.path:
            raise LocatedProblemsError([(("path",), "the `file` backend needs a `path`")])
        return self
