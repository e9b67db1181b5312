"""Sagas: multi-step operations with compensation, persisted in the service's database.

>>> saga = Saga("place_order", OrderData)
>>> @saga.step("reserve", compensate=release, timeout=5)
... async def reserve(ctx: StepContext[OrderData]) -> None: ...
>>> orchestrator = SagaOrchestrator(engine, [saga], bus=bus, service="orders")  # bus optional
>>> await orchestrator.start(); saga_id = await orchestrator.run("place_order", OrderData(...))

Modules: :mod:`.definition` (sagas, steps, retry budgets, the step context), :mod:`.orchestrator`
(start, resume, claims), :mod:`.execution` (the state machine), :mod:`.store` and :mod:`.tables`
(persistence), :mod:`.acks` (waiting for every service to acknowledge), :mod:`.state` (read
models), :mod:`.telemetry` (metrics, logs, traces), :mod:`.errors`. See docs/sagas.md.
"""

from edgeway.bus.transport import Backoff
from edgeway.saga.acks import Acknowledgement, AckReport, ack_event, ack_step, acknowledge
from edgeway.saga.definition import Retry, Saga, Step, StepContext
from edgeway.saga.errors import (
    AcksMissingError,
    RetryableError,
    SagaConfigError,
    SagaDataError,
    SagaError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaStateError,
    SagaTimeoutError,
    StepFailed,
    StepTimeoutError,
)
from edgeway.saga.orchestrator import OrchestratorConfig, SagaOrchestrator
from edgeway.saga.state import SagaState, SagaSummary, StepState
from edgeway.saga.status import SagaStatus, StepStatus
from edgeway.saga.tables import saga_tables

__all__ = [
    "AckReport",
    "Acknowledgement",
    "AcksMissingError",
    "Backoff",
    "OrchestratorConfig",
    "Retry",
    "RetryableError",
    "Saga",
    "SagaConfigError",
    "SagaDataError",
    "SagaError",
    "SagaLeaseLostError",
    "SagaNotFoundError",
    "SagaOrchestrator",
    "SagaState",
    "SagaStateError",
    "SagaStatus",
    "SagaSummary",
    "SagaTimeoutError",
    "Step",
    "StepContext",
    "StepFailed",
    "StepState",
    "StepStatus",
    "StepTimeoutError",
    "ack_event",
    "ack_step",
    "acknowledge",
    "saga_tables",
]
