"""Declaring a saga: typed data, ordered steps, their compensations, timeouts and retry budgets.

>>> saga = Saga("place_order", OrderData)
>>> @saga.step("reserve", compensate=release, timeout=5)
... async def reserve(ctx: StepContext[OrderData]) -> Reservation: ...

A step's action gets a :class:`StepContext`: the saga's data (a copy it may change; the changes
are stored when the step succeeds, thrown away when it fails), the results of earlier steps, and
the idempotency key to pass to the service it calls. Its return value (a pydantic model or
anything JSON-able) is stored as the step's result, for later steps and for its compensation.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.transport import Backoff
from edgeway.saga.errors import RetryableError, SagaConfigError, SagaDataError

if TYPE_CHECKING:
    from edgeway.bus.bus import EventBus
    from edgeway.saga.acks import AckTracker

D = TypeVar("D", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

H_IDEMPOTENCY_KEY = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class Retry:
    """How often a step (or compensation) is tried and how long to wait in between.

    ``attempts`` counts every try, the first included; only exceptions of a type in ``on`` are
    retried, anything else fails at once. An attempt cut short by a crash or a lost lease does
    not count (it is re-run, see ``SagaOrchestrator.max_interruptions``).
    """

    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.2, factor=2.0, maximum=10.0))
    on: tuple[type[BaseException], ...] = (RetryableError, ConnectionError)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise SagaConfigError(f"retry attempts must be at least 1 (the first try), got {self.attempts}")

    def retries(self, exc: BaseException) -> bool:
        return isinstance(exc, self.on)


# A compensation that fails leaves the system inconsistent, so it is tried harder and on any
# error: ~2 minutes with the default backoff (0.5, 1, 2 … capped at 30 s) before the saga is
# marked failed for an operator.
DEFAULT_COMPENSATION_RETRY = Retry(
    attempts=10, backoff=Backoff(initial=0.5, factor=2.0, maximum=30.0), on=(Exception,)
)


class StepContext(Generic[D]):
    """What a step's action or compensation gets. See the module docstring."""

    def __init__(
        self,
        *,
        saga_id: str,
        saga_name: str,
        step: str,
        attempt: int,
        data: D,
        results: Mapping[str, Any],
        compensating: bool,
        request_id: str,
        traceparent: str,
        started_at: float,
        tracestate: str | None = None,
        error: str | None = None,
        session: AsyncSession | None = None,
        bus: EventBus | None = None,
        acks: AckTracker | None = None,
    ) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self.step = step
        self.attempt = attempt
        self.data = data
        self.results = results
        self.compensating = compensating
        self.request_id = request_id
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.started_at = started_at
        self.error = error
        self.bus = bus
        self._session = session
        self._acks = acks

    @property
    def key(self) -> str:
        """The step's key, the same for its action and its compensation: ``<saga id>:<step>``.

        A compensation can use it to find what the action created (a reservation filed under
        the action's idempotency key) even when the action's result was never recorded.
        """
        return f"{self.saga_id}:{self.step}"

    @property
    def idempotency_key(self) -> str:
        """The key of this call; stable across retries, crashes and replicas.

        ``<saga id>:<step>`` for the action, ``<saga id>:<step>:compensate`` for the compensation.
        """
        return f"{self.key}:compensate" if self.compensating else self.key

    @property
    def headers(self) -> dict[str, str]:
        """Headers for an outgoing call: ``Idempotency-Key``, ``X-Request-ID``, ``traceparent``
        (and ``tracestate`` when the trace has one)."""
        headers = {
            H_IDEMPOTENCY_KEY: self.idempotency_key,
            "X-Request-ID": self.request_id,
            "traceparent": self.traceparent,
        }
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    @property
    def trace_headers(self) -> dict[str, str]:
        """Request id and trace context as event headers: ``bus.publish(event, headers=ctx.trace_headers)``.

        Events published or written to the outbox inside a step carry them anyway (the step's
        span is current); pass them when publishing from elsewhere on the step's behalf."""
        headers = {"x-request-id": self.request_id, "traceparent": self.traceparent}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    @property
    def result(self) -> Any:
        """This step's stored result (in a compensation), ``None`` if the action never recorded one."""
        return self.results.get(self.step)

    @overload
    def result_as(self, model: type[M]) -> M | None: ...

    @overload
    def result_as(self, model: type[M], step: str) -> M | None: ...

    def result_as(self, model: type[M], step: str | None = None) -> M | None:
        """A step's result (this step's by default) parsed as ``model``; ``None`` if there is none."""
        raw = self.results.get(step or self.step)
        if raw is None:
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise SagaDataError(
                f"result of step {step or self.step!r} does not validate as {model.__name__}: {exc}"
            ) from exc

    @property
    def session(self) -> AsyncSession:
        """The database transaction of a ``transactional=True`` step; it commits with the step."""
        if self._session is None:
            raise SagaConfigError(
                f"step {self.step!r} has no session: declare it with transactional=True to run it "
                "inside the transaction that records it as done"
            )
        return self._session

    @property
    def acks(self) -> AckTracker:
        if self._acks is None:
            raise SagaConfigError(
                f"step {self.step!r} waits for acknowledgements but the orchestrator has no bus: "
                "pass bus=… and service=… to SagaOrchestrator"
            )
        return self._acks

    def __repr__(self) -> str:
        phase = "compensation" if self.compensating else "action"
        return f"<StepContext {self.saga_name}/{self.saga_id} {self.step} {phase} attempt={self.attempt}>"


Action = Callable[[StepContext[D]], Awaitable[Any]]
Compensation = Callable[[StepContext[D]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Step(Generic[D]):
    name: str
    action: Action[D]
    compensate: Compensation[D] | None
    timeout: float
    retry: Retry
    compensation_retry: Retry
    compensation_timeout: float
    transactional: bool
    retriable: bool = False


class Saga(Generic[D]):
    """A named, ordered list of steps over data of type ``data_class``."""

    def __init__(self, name: str, data_class: type[D]) -> None:
        if NAME.fullmatch(name) is None:
            raise SagaConfigError(f"invalid saga name {name!r}: it must match {NAME.pattern}")
        if not (isinstance(data_class, type) and issubclass(data_class, BaseModel)):
            raise SagaConfigError(f"saga {name!r}: the data class must be a pydantic BaseModel subclass")
        self.name = name
        self.data_class = data_class
        self.steps: list[Step[D]] = []

    def step(
        self,
        name: str,
        *,
        compensate: Compensation[D] | None = None,
        timeout: float = 30.0,
        retry: Retry | None = None,
        compensation_retry: Retry | None = None,
        compensation_timeout: float | None = None,
        transactional: bool = False,
        retriable: bool = False,
    ) -> Callable[[Action[D]], Action[D]]:
        """Decorator: append the function as the next step. See :meth:`add_step`."""

        def register(action: Action[D]) -> Action[D]:
            self.add_step(
                name,
                action,
                compensate=compensate,
                timeout=timeout,
                retry=retry,
                compensation_retry=compensation_retry,
                compensation_timeout=compensation_timeout,
                transactional=transactional,
                retriable=retriable,
            )
            return action

        return register

    def add_step(
        self,
        name: str,
        action: Action[D],
        *,
        compensate: Compensation[D] | None = None,
        timeout: float = 30.0,
        retry: Retry | None = None,
        compensation_retry: Retry | None = None,
        compensation_timeout: float | None = None,
        transactional: bool = False,
        retriable: bool = False,
    ) -> Step[D]:
        """Append a step.

        ``timeout`` bounds one attempt in seconds (exceeding it fails the step, see
        :class:`~edgeway.saga.errors.StepTimeoutError`); ``retry`` is its budget for transient
        failures (default 3 attempts on ``RetryableError``/``ConnectionError``);
        ``compensation_retry`` the compensation's (default 10 attempts on any error);
        ``transactional=True`` runs the action inside the database transaction that marks it
        done (``ctx.session``): its local writes commit exactly once, with the step.

        ``retriable=True`` puts the step after the saga's pivot (Garcia-Molina's compensatable
        steps, a pivot, then retriable steps): once the pivot is done the saga can only go
        forward, so a retriable step is retried on any error, a timeout included, with
        ``retry.backoff`` and no attempt limit, and never turns the saga ``compensating``. It
        cannot have a compensation, and every step after it must be retriable too.
        """
        if NAME.fullmatch(name) is None:
            raise SagaConfigError(
                f"saga {self.name!r}: invalid step name {name!r}: it must match {NAME.pattern}"
            )
        if any(s.name == name for s in self.steps):
            raise SagaConfigError(f"saga {self.name!r} already has a step named {name!r}")
        if timeout <= 0 or (compensation_timeout is not None and compensation_timeout <= 0):
            raise SagaConfigError(f"saga {self.name!r}, step {name!r}: timeouts must be > 0 seconds")
        if retriable and compensate is not None:
            raise SagaConfigError(
                f"saga {self.name!r}, step {name!r}: a retriable step cannot have a compensation "
                "(it comes after the pivot, where the saga only goes forward)"
            )
        after = next((s.name for s in self.steps if s.retriable), None)
        if after is not None and not retriable:
            raise SagaConfigError(
                f"saga {self.name!r}, step {name!r}: it comes after the retriable step {after!r}, "
                "so it must be retriable too (a failure there could not be compensated); declare it "
                "with retriable=True or move it before the pivot"
            )
        step = Step(
            name=name,
            action=action,
            compensate=compensate,
            timeout=timeout,
            retry=retry if retry is not None else Retry(),
            compensation_retry=compensation_retry
            if compensation_retry is not None
            else DEFAULT_COMPENSATION_RETRY,
            compensation_timeout=compensation_timeout if compensation_timeout is not None else timeout,
            transactional=transactional,
            retriable=retriable,
        )
        self.steps.append(step)
        return step

    def index(self, step: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == step:
                return i
        raise SagaConfigError(f"saga {self.name!r} has no step {step!r} (was it renamed while sagas ran?)")

    def validate_data(self, data: BaseModel | Mapping[str, Any]) -> D:
        """``data`` as this saga's data class (a dict or another model is validated)."""
        if isinstance(data, self.data_class):
            return data
        raw = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        try:
            return self.data_class.model_validate(raw)
        except ValidationError as exc:
            raise SagaDataError(
                f"saga {self.name!r}: data does not validate as {self.data_class.__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<Saga {self.name} steps={[s.name for s in self.steps]}>"
