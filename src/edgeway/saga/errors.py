"""Errors raised by the saga orchestrator, and the two a step raises to steer it.

Hierarchy::

    SagaError                      anything the saga package raises on purpose
    ├── SagaConfigError            a saga, step or orchestrator is declared wrongly
    ├── SagaNotFoundError          no saga with that id (or not one this orchestrator knows)
    ├── SagaDataError              saga data or a step result does not validate / serialise
    ├── SagaLeaseLostError         another instance took the saga over; this one stops touching it
    ├── SagaStateError             the operation does not fit the saga's status (retry a running one)
    ├── SagaTimeoutError           ``wait`` gave up before the saga finished
    └── StepError                  raised *by step code* (or for it) to say how a step failed
        ├── RetryableError         transient: retry with backoff while the step's budget lasts
        ├── StepFailed             definitive: compensate now; may carry a result to persist
        │   └── AcksMissingError   an acknowledgement step's deadline passed without every ack
        └── StepTimeoutError       the step exceeded its timeout (the orchestrator raises it)

Any other exception a step raises fails it without retries, unless the step's ``Retry.on``
lists its type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SagaError(Exception):
    """Base class of every error the saga package raises."""


class SagaConfigError(SagaError):
    """A saga, step or orchestrator is declared wrongly."""


class SagaNotFoundError(SagaError):
    """No saga with the id exists (or its name is not registered here)."""

    def __init__(self, saga_id: str, detail: str = "") -> None:
        super().__init__(f"no saga {saga_id!r}{': ' + detail if detail else ''}")
        self.saga_id = saga_id


class SagaDataError(SagaError):
    """Saga data or a step's result does not validate or cannot be stored as JSON."""


class SagaLeaseLostError(SagaError):
    """The saga's row changed under us: another instance claimed it after our lease expired."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"saga {saga_id} was taken over by another instance (our lease expired or the row "
            "changed); this instance stops working on it"
        )
        self.saga_id = saga_id


class SagaStateError(SagaError):
    """The requested operation does not apply to the saga in its current status."""


class SagaTimeoutError(SagaError, TimeoutError):
    """``SagaOrchestrator.wait`` returned before the saga reached a final status."""


class StepError(Exception):
    """Base of the exceptions that tell the orchestrator how a step failed."""


class RetryableError(StepError):
    """A transient failure: the orchestrator retries the step with backoff until its budget ends."""


class StepFailed(StepError):
    """A definitive failure: no retry, compensation starts.

    ``result`` (JSON-able) is stored as the step's result even though the step failed, so the
    reason survives in the saga's persisted state (the acknowledgement step uses it for the
    report of who did not answer).
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class AcksMissingError(StepFailed):
    """An acknowledgement step with ``require_all`` reached its deadline with services missing."""

    def __init__(self, step: str, missing: Sequence[str], result: Any) -> None:
        names = ", ".join(missing)
        super().__init__(f"step {step!r}: no acknowledgement from {names} before the deadline", result=result)
        self.missing = list(missing)


class StepTimeoutError(StepError):
    """The step (or compensation) did not finish within its timeout.

    The remote call it made may still take effect after this; compensations must therefore be
    idempotent and tolerate both "already undone" and "nothing to undo".
    """

    def __init__(self, step: str, timeout: float, *, compensating: bool = False) -> None:
        what = "compensation of step" if compensating else "step"
        super().__init__(f"{what} {step!r} did not finish within its timeout of {timeout:g} s")
        self.step = step
        self.timeout = timeout
