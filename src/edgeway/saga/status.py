"""The status machines of a saga and of each of its steps.

Saga::

    running ──► completed
       │
       └──► compensating ──► compensated
                  │
                  └──► failed        (a compensation exhausted its budget: needs attention;
                                      ``retry`` puts it back to compensating)

Step (one row per step, created ``pending`` when the saga starts)::

    pending ──► running ──► done ──► compensating ──► compensated
                   │                      │
                   └──► failed ───────────┴──► compensation_failed

A step found ``running`` or ``compensating`` when a saga is claimed was interrupted (the process
died, or was stopped without finishing it): it runs again with the same idempotency key.
"""

from __future__ import annotations

import enum


class SagaStatus(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """No orchestrator will touch it again (``failed`` only by an explicit retry)."""
        return self in _FINISHED

    @property
    def is_active(self) -> bool:
        """An orchestrator should be driving it."""
        return self in _ACTIVE


_FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})
_ACTIVE = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})
ACTIVE_STATUSES = tuple(s.value for s in _ACTIVE)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def is_in_flight(self) -> bool:
        """An action or compensation was started and its end not recorded."""
        return self in (StepStatus.RUNNING, StepStatus.COMPENSATING)

    @property
    def needs_compensation(self) -> bool:
        """Its effect may exist: done, failed (a timeout may still land), or a compensation
        that was interrupted or failed before."""
        return self in _TO_COMPENSATE


_TO_COMPENSATE = frozenset(
    {StepStatus.DONE, StepStatus.FAILED, StepStatus.COMPENSATING, StepStatus.COMPENSATION_FAILED}
)
