"""Read models of a saga's persisted state, for APIs (``GET /orders/{id}/saga``), the CLI and tests.

They are pydantic models, so a FastAPI endpoint can return them as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgeway.saga.errors import SagaDataError
from edgeway.saga.status import SagaStatus, StepStatus

M = TypeVar("M", bound=BaseModel)


class StepState(BaseModel):
    name: str
    position: int
    status: StepStatus
    attempts: int
    failures: int
    compensation_attempts: int
    compensation_failures: int
    interruptions: int
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    compensated_at: datetime | None = None


class SagaSummary(BaseModel):
    id: str
    name: str
    status: SagaStatus
    current_step: int
    error: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    version: int
    owner: str | None = None
    lease_until: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status.is_finished

    @property
    def needs_attention(self) -> bool:
        """``failed``: a compensation gave up and the system may be inconsistent."""
        return self.status is SagaStatus.FAILED


class SagaState(SagaSummary):
    """One saga with its data and every step."""

    data: dict[str, Any]
    steps: list[StepState]

    def step(self, name: str) -> StepState:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.name!r} ({self.id}) has no step {name!r}")

    def data_as(self, model: type[M]) -> M:
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise SagaDataError(f"saga {self.id} data does not validate as {model.__name__}: {exc}") from exc
