"""Driving one saga from its persisted state to a final status.

The rules, all enforced here:

* A step recorded ``done`` never runs again; ``current_step`` and the step's ``done`` are written
  in one transaction, so a crash cannot separate them.
* Before an attempt starts, its start is recorded (``running``, ``attempts + 1``). A step found
  ``running`` when the saga is claimed was interrupted: it runs again with the same idempotency
  key (the callee de-duplicates); after ``max_interruptions`` such restarts it fails, so a step
  that kills its process cannot loop forever.
* A failure that its ``Retry.on`` lists is retried after the backoff while fewer than
  ``Retry.attempts`` attempts have failed; any other failure, an exhausted budget or a timeout
  fails the step: the saga turns ``compensating``.
* A ``retriable`` step (after the pivot) is retried on any failure, a timeout included, with its
  backoff and no attempt limit, and an interruption never fails it: the saga only goes forward.
* Compensation walks the steps in reverse definition order and compensates every step whose
  effect may exist (done, failed, or a compensation that was interrupted), each until it
  succeeds or exhausts its budget; the first that gives up turns the saga ``failed``.
* Each write is fenced by the saga row's version and our ownership (see :mod:`.store`); losing
  the lease stops this execution at its next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Tracer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.bus import EventBus
from edgeway.saga.acks import AckTracker
from edgeway.saga.definition import Compensation, Saga, Step, StepContext
from edgeway.saga.errors import SagaDataError, StepFailed, StepTimeoutError
from edgeway.saga.status import SagaStatus, StepStatus
from edgeway.saga.store import SagaRecord, SagaStore, StepRecord
from edgeway.saga.telemetry import SagaMetrics, log_fields, saga_scope, step_scope

log = logging.getLogger("edgeway.saga")

_ACTION = "action"
_COMPENSATION = "compensation"


@dataclass(slots=True)
class SagaEnv:
    """What every execution in one orchestrator shares."""

    store: SagaStore
    owner: str
    metrics: SagaMetrics
    stopping: asyncio.Event
    max_interruptions: int
    tracer: Tracer | None = None
    bus: EventBus | None = None
    acks: AckTracker | None = None


class _ActionFailed(Exception):
    """Carries a transactional step's exception out of its (rolled back) transaction."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Execution:
    """One saga, driven by one orchestrator instance that holds its lease."""

    def __init__(self, env: SagaEnv, saga: Saga[Any], record: SagaRecord) -> None:
        self.env = env
        self.saga = saga
        self.record = record
        self.owner = env.owner
        self.store = env.store

    async def drive(self) -> SagaStatus:
        """Run until the saga is finished or the orchestrator stops; returns the status reached."""
        record = self.record
        with saga_scope(record.request_id, record.traceparent):
            await self._add_missing_steps()
            await self._count_interruptions()
            while not self.env.stopping.is_set():
                if record.status is SagaStatus.RUNNING:
                    if record.current_step >= len(self.saga.steps):
                        await self._finish(SagaStatus.COMPLETED)
                        break
                    await self._forward(self.saga.steps[record.current_step])
                elif record.status is SagaStatus.COMPENSATING:
                    await self._compensate_all()
                else:
                    break
        return record.status

    # -- set-up ----------------------------------------------------------------------------------

    async def _add_missing_steps(self) -> None:
        known = self.record.steps
        missing = [StepRecord(s.name, i) for i, s in enumerate(self.saga.steps) if s.name not in known]
        if missing:
            await self.store.add_steps(self.record, missing)

    async def _count_interruptions(self) -> None:
        record = self.record
        for step in list(record.steps.values()):
            if not step.status.is_in_flight:
                continue
            count = step.interruptions + 1
            fields = log_fields(record.id, record.name, step.name, interruptions=count)
            if count <= self.env.max_interruptions or self._retriable(step.name, step.status):
                log.warning("resuming interrupted step %s of saga %s", step.name, record.id, extra=fields)
                await self.store.save(record, self.owner, steps={step.name: {"interruptions": count}})
                continue
            error = (
                f"step {step.name!r} was interrupted {count} times (its process died or lost the lease "
                f"while running it); max_interruptions={self.env.max_interruptions}"
            )
            log.error("giving up on interrupted step: %s", error, extra=fields)
            if step.status is StepStatus.RUNNING:
                await self.store.save(
                    record,
                    self.owner,
                    saga={"status": SagaStatus.COMPENSATING, "error": error},
                    steps={step.name: {"status": StepStatus.FAILED, "interruptions": count, "error": error}},
                )
            else:
                await self._give_up(step, error, {"interruptions": count})
                return

    def _retriable(self, name: str, status: StepStatus) -> bool:
        """A retriable step's action is resumed however often it was cut short: past the pivot the
        saga cannot compensate (a compensation in flight still counts its interruptions)."""
        if status is not StepStatus.RUNNING:
            return False
        return any(s.name == name and s.retriable for s in self.saga.steps)

    # -- forward ---------------------------------------------------------------------------------

    async def _forward(self, step: Step[Any]) -> None:
        record = self.record
        rec = record.steps[step.name]
        if rec.status is StepStatus.DONE:
            # Only when the definition changed under a running saga (a step inserted before
            # this one): never run a done step again, move past it.
            await self.store.save(record, self.owner, saga={"current_step": record.current_step + 1})
            return
        while True:
            attempt = rec.attempts + 1
            await self.store.save(
                record,
                self.owner,
                steps={
                    step.name: {
                        "status": StepStatus.RUNNING,
                        "attempts": attempt,
                        "started_at": rec.started_at or time.time(),
                    }
                },
            )
            error = await self._attempt(step, rec, attempt)
            if error is None:
                return
            failures = rec.failures + 1
            fields = log_fields(record.id, record.name, step.name, attempt=attempt)
            if step.retriable or (step.retry.retries(error) and failures < step.retry.attempts):
                if await self._backoff(step, _ACTION, attempt, failures, error):
                    continue
                return
            message = f"step {step.name!r} failed: {describe(error)}"
            try:
                result = _jsonable(error.result, step.name) if isinstance(error, StepFailed) else None
            except SagaDataError:
                result = None
            log.warning("%s; compensating", message, extra=fields)
            await self.store.save(
                record,
                self.owner,
                saga={"status": SagaStatus.COMPENSATING, "error": message},
                steps={
                    step.name: {
                        "status": StepStatus.FAILED,
                        "failures": failures,
                        "error": describe(error),
                        "finished_at": time.time(),
                        "result": result,
                    }
                },
            )
            return

    async def _attempt(self, step: Step[Any], rec: StepRecord, attempt: int) -> Exception | None:
        """One attempt; records success itself and returns the step's exception on failure."""
        record = self.record
        started = time.perf_counter()
        outcome = "done"
        try:
            with step_scope(
                record.request_id,
                record.traceparent,
                f"saga {record.name} {step.name}",
                self.env.tracer,
                record.tracestate,
                _span_attributes(record, step.name, attempt, _ACTION),
            ) as traceparent:
                if step.transactional:
                    await self._transactional(step, rec, attempt, traceparent)
                else:
                    ctx = self._context(step, rec, attempt, traceparent, compensating=False)
                    try:
                        result = await self._call(
                            step.action, ctx, step.timeout, step.name, compensating=False
                        )
                        data, output = self._outputs(ctx, result)
                    except Exception as exc:
                        outcome = "failed"
                        return exc
                    await self.store.save(record, self.owner, **self._done(step, data, output))
                log.info(
                    "step %s done",
                    step.name,
                    extra=log_fields(record.id, record.name, step.name, attempt=attempt),
                )
        except _ActionFailed as failed:
            outcome = "failed"
            return failed.error
        finally:
            self.env.metrics.step_duration.labels(record.name, step.name, _ACTION, outcome).observe(
                time.perf_counter() - started
            )
        return None

    async def _transactional(self, step: Step[Any], rec: StepRecord, attempt: int, traceparent: str) -> None:
        record = self.record
        async with self.store.sessions() as session, session.begin():
            # Fence first: it takes the write lock (SQLite) or the row lock (PostgreSQL)
            # before the step's own reads, so a read snapshot never has to be upgraded.
            await self.store.fence(session, record, self.owner)
            ctx = self._context(step, rec, attempt, traceparent, compensating=False, session=session)
            try:
                result = await self._call(step.action, ctx, step.timeout, step.name, compensating=False)
                data, output = self._outputs(ctx, result)
            except Exception as exc:
                raise _ActionFailed(exc) from exc
            done = self._done(step, data, output)
            await self.store.write(session, record, done["saga"], done["steps"])
        record.apply(done["saga"], done["steps"])

    def _done(self, step: Step[Any], data: dict[str, Any], output: Any) -> dict[str, Any]:
        return {
            "saga": {"data": data, "current_step": self.record.current_step + 1},
            "steps": {
                step.name: {
                    "status": StepStatus.DONE,
                    "result": output,
                    "error": None,
                    "finished_at": time.time(),
                }
            },
        }

    def _outputs(self, ctx: StepContext[Any], result: Any) -> tuple[dict[str, Any], Any]:
        """The data after the step (validated) and its result, both as JSON-able values."""
        try:
            raw = ctx.data.model_dump(mode="json", warnings=False)
            data = self.saga.data_class.model_validate(raw).model_dump(mode="json")
        except (ValidationError, PydanticSerializationError) as exc:
            raise SagaDataError(
                f"step {ctx.step!r} left saga data that does not validate as "
                f"{self.saga.data_class.__name__}: {exc}"
            ) from exc
        return data, _jsonable(result, ctx.step)

    # -- compensation ----------------------------------------------------------------------------

    async def _compensate_all(self) -> None:
        record = self.record
        defined = {s.name for s in self.saga.steps}
        orphans = [r for r in record.steps.values() if r.name not in defined and r.status.needs_compensation]
        if orphans:
            error = (
                f"step {orphans[0].name!r} is no longer in the definition of saga {record.name!r}, "
                "so it cannot be compensated; undo its effect by hand"
            )
            await self._give_up(orphans[0], error, {})
            return
        for step in reversed(self.saga.steps):
            rec = record.steps[step.name]
            if step.compensate is None or not rec.status.needs_compensation:
                continue
            if not await self._compensate(step, rec, step.compensate):
                return
            if self.env.stopping.is_set():
                return
        await self._finish(SagaStatus.COMPENSATED)

    async def _compensate(self, step: Step[Any], rec: StepRecord, compensate: Compensation[Any]) -> bool:
        record = self.record
        while True:
            attempt = rec.compensation_attempts + 1
            await self.store.save(
                record,
                self.owner,
                steps={step.name: {"status": StepStatus.COMPENSATING, "compensation_attempts": attempt}},
            )
            started = time.perf_counter()
            error: Exception | None = None
            with step_scope(
                record.request_id,
                record.traceparent,
                f"saga {record.name} {step.name} compensate",
                self.env.tracer,
                record.tracestate,
                _span_attributes(record, step.name, attempt, _COMPENSATION),
            ) as traceparent:
                ctx = self._context(step, rec, attempt, traceparent, compensating=True)
                try:
                    await self._call(compensate, ctx, step.compensation_timeout, step.name, compensating=True)
                except Exception as exc:
                    error = exc
            outcome = "compensated" if error is None else "failed"
            self.env.metrics.step_duration.labels(record.name, step.name, _COMPENSATION, outcome).observe(
                time.perf_counter() - started
            )
            fields = log_fields(record.id, record.name, step.name, attempt=attempt)
            if error is None:
                await self.store.save(
                    record,
                    self.owner,
                    steps={step.name: {"status": StepStatus.COMPENSATED, "compensated_at": time.time()}},
                )
                log.info("step %s compensated", step.name, extra=fields)
                return True
            failures = rec.compensation_failures + 1
            budget = step.compensation_retry
            if budget.retries(error) and failures < budget.attempts:
                if await self._backoff(step, _COMPENSATION, attempt, failures, error):
                    continue
                return False
            error_text = (
                f"compensation of step {step.name!r} failed after {attempt} attempts: {describe(error)}; "
                "the saga needs attention (fix the cause, then `edgeway saga retry`)"
            )
            await self._give_up(rec, error_text, {"compensation_failures": failures})
            return False

    async def _backoff(
        self, step: Step[Any], phase: str, attempt: int, failures: int, error: Exception
    ) -> bool:
        """Record a retryable failure and wait out the backoff; ``False`` when stopping instead."""
        record = self.record
        if phase == _ACTION:
            budget = step.retry
            values: dict[str, Any] = {"status": StepStatus.PENDING, "failures": failures}
        else:
            budget = step.compensation_retry
            values = {"compensation_failures": failures}
        delay = budget.backoff.delay(failures)
        forever = phase == _ACTION and step.retriable
        log.warning(
            "%s %s failed (attempt %d of %s), retrying in %.3g s: %s",
            "step" if phase == _ACTION else "compensation of step",
            step.name,
            attempt,
            "unlimited, past the pivot" if forever else budget.attempts,
            delay,
            describe(error),
            extra=log_fields(record.id, record.name, step.name, attempt=attempt),
        )
        self.env.metrics.step_retries.labels(record.name, step.name, phase).inc()
        await self.store.save(record, self.owner, steps={step.name: {**values, "error": describe(error)}})
        return not await self._pause(delay)

    async def _give_up(self, rec: StepRecord, error: str, counters: dict[str, int]) -> None:
        record = self.record
        original = f" (it was compensating because {record.error})" if record.error else ""
        log.error(
            "saga %s failed and needs attention: %s%s",
            record.id,
            error,
            original,
            extra=log_fields(record.id, record.name, rec.name),
        )
        await self.store.save(
            record,
            self.owner,
            saga={
                "status": SagaStatus.FAILED,
                "error": error + original,
                "finished_at": time.time(),
                "owner": None,
                "lease_until": None,
            },
            steps={rec.name: {"status": StepStatus.COMPENSATION_FAILED, "error": error, **counters}},
        )
        self.env.metrics.failed.labels(record.name).inc()

    # -- shared ----------------------------------------------------------------------------------

    async def _finish(self, status: SagaStatus) -> None:
        record = self.record
        await self.store.save(
            record,
            self.owner,
            saga={"status": status, "finished_at": time.time(), "owner": None, "lease_until": None},
        )
        counter = (
            self.env.metrics.completed if status is SagaStatus.COMPLETED else self.env.metrics.compensated
        )
        counter.labels(record.name).inc()
        log.info(
            "saga %s %s",
            record.id,
            status.value,
            extra=log_fields(record.id, record.name, status=status.value),
        )

    async def _pause(self, delay: float) -> bool:
        """Sleep before a retry; ``True`` when the orchestrator is stopping (leave the rest to a resume)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.env.stopping.wait(), timeout=delay)
        return self.env.stopping.is_set()

    @staticmethod
    async def _call(
        fn: Callable[[StepContext[Any]], Awaitable[Any]],
        ctx: StepContext[Any],
        timeout: float,
        name: str,
        *,
        compensating: bool,
    ) -> Any:
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await fn(ctx)
        except TimeoutError as exc:
            if scope.expired():
                raise StepTimeoutError(name, timeout, compensating=compensating) from exc
            raise

    def _context(
        self,
        step: Step[Any],
        rec: StepRecord,
        attempt: int,
        traceparent: str,
        *,
        compensating: bool,
        session: AsyncSession | None = None,
    ) -> StepContext[Any]:
        record = self.record
        return StepContext(
            saga_id=record.id,
            saga_name=record.name,
            step=step.name,
            attempt=attempt,
            # A fresh copy each attempt: a failed attempt's changes never leak into the next.
            data=self.saga.data_class.model_validate(record.data),
            results={r.name: r.result for r in record.steps.values() if r.result is not None},
            compensating=compensating,
            request_id=record.request_id or "",
            traceparent=traceparent,
            tracestate=record.tracestate,
            started_at=rec.started_at or time.time(),
            error=record.error,
            session=session,
            bus=self.env.bus,
            acks=self.env.acks,
        )


def _span_attributes(record: SagaRecord, step: str, attempt: int, phase: str) -> dict[str, str | int]:
    return {
        "edgeway.saga.id": record.id,
        "edgeway.saga.name": record.name,
        "edgeway.saga.step": step,
        "edgeway.saga.phase": phase,
        "edgeway.saga.attempt": attempt,
    }


def _jsonable(value: Any, step: str | None = None) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        where = f"step {step!r}" if step else "a step"
        raise SagaDataError(f"the result of {where} cannot be stored as JSON: {exc}") from exc
