"""The saga orchestrator: starts sagas, resumes unfinished ones, and keeps replicas apart.

>>> orchestrator = SagaOrchestrator(engine, [place_order], bus=bus, service="orders")
>>> await orchestrator.start()
>>> saga_id = await orchestrator.run("place_order", OrderData(order_id="o-1", ...))
>>> state = await orchestrator.wait(saga_id, timeout=30)

Every instance (one per service replica) scans the saga table every ``poll_interval`` seconds,
claims unfinished sagas that nobody holds or whose holder's lease expired, and drives them from
their persisted state — so a crashed or redeployed replica's sagas continue elsewhere, or in the
same replica after its restart. A held saga's lease (``lease`` seconds) is renewed every third of
it while the saga runs; an instance that cannot renew (database unreachable) stops its sagas
before the lease can expire, so two instances never drive one saga at once. A saga started with
:meth:`SagaOrchestrator.run` is held from birth by the instance that started it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry.trace import Tracer
from pydantic import BaseModel
from sqlalchemy import MetaData
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from edgeway.bus.bus import EventBus
from edgeway.bus.events import new_event_id
from edgeway.observability.logs import FailureLog
from edgeway.observability.metrics import Metrics
from edgeway.saga.acks import AckTracker
from edgeway.saga.definition import Saga
from edgeway.saga.errors import (
    SagaConfigError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaStateError,
    SagaTimeoutError,
)
from edgeway.saga.execution import Execution, SagaEnv
from edgeway.saga.state import SagaState, SagaSummary
from edgeway.saga.status import SagaStatus
from edgeway.saga.store import SagaRecord, SagaStore, StepRecord
from edgeway.saga.telemetry import SagaMetrics, log_fields, start_ids
from edgeway.tasks import BackgroundTasks, woken

log = logging.getLogger("edgeway.saga")


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    """Timing and limits of one orchestrator instance (seconds unless said otherwise).

    ``lease``: how long a claim holds without renewal; a crashed instance's sagas are resumed
    elsewhere this long after its last renewal. ``poll_interval``: how often the instance looks
    for unfinished sagas to take over. ``max_concurrent``: sagas driven at once by this instance
    (claims stop at this number; ``run`` is not limited). ``max_interruptions``: how often one
    step may be found interrupted (its process died mid-step) before it fails. ``stop_grace``:
    how long ``stop`` lets running steps finish before cancelling them. ``ack_poll_interval``:
    how often an acknowledgement step re-reads acks other replicas recorded.
    """

    lease: float = 30.0
    poll_interval: float = 1.0
    max_concurrent: int = 100
    max_interruptions: int = 5
    stop_grace: float = 10.0
    ack_poll_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.poll_interval <= 0 or self.ack_poll_interval <= 0:
            raise SagaConfigError("lease, poll_interval and ack_poll_interval must be > 0 seconds")
        if self.max_concurrent < 1 or self.max_interruptions < 0 or self.stop_grace < 0:
            raise SagaConfigError("max_concurrent must be >= 1; max_interruptions and stop_grace >= 0")


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SagaOrchestrator:
    """Runs the given sagas on the service's database. See the module docstring.

    ``bus`` and ``service`` enable acknowledgement steps (:mod:`edgeway.saga.acks`): the
    orchestrator subscribes to acknowledgements as group ``<service>-saga-acks``, so create it
    before starting the bus. ``metadata``: the service's SQLAlchemy metadata, to put the saga
    tables in its migrations; ``create_tables`` creates them at start when missing.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        sagas: Iterable[Saga[Any]],
        *,
        bus: EventBus | None = None,
        service: str | None = None,
        config: OrchestratorConfig | None = None,
        metadata: MetaData | None = None,
        table_prefix: str = "edgeway_saga",
        instance_id: str | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        create_tables: bool = True,
    ) -> None:
        self.config = config if config is not None else OrchestratorConfig()
        self.sagas: dict[str, Saga[Any]] = {}
        for saga in sagas:
            if saga.name in self.sagas:
                raise SagaConfigError(f"two sagas are named {saga.name!r}")
            self.sagas[saga.name] = saga
        self.instance_id = instance_id or default_instance_id()
        self.store = SagaStore(engine, metadata=metadata, prefix=table_prefix)
        self.metrics = metrics if metrics is not None else Metrics(service or "saga")
        self.acks: AckTracker | None = None
        if bus is not None:
            if not service:
                raise SagaConfigError(
                    "pass service=<this service's name> with bus=: it names the ack consumer group"
                )
            self.acks = AckTracker(self.store, bus, service, poll_interval=self.config.ack_poll_interval)
        self._env = SagaEnv(
            store=self.store,
            owner=self.instance_id,
            metrics=SagaMetrics(self.metrics),
            stopping=asyncio.Event(),
            max_interruptions=self.config.max_interruptions,
            tracer=tracer,
            bus=bus,
            acks=self.acks,
        )
        self._create_tables = create_tables
        self._active: dict[str, asyncio.Task[SagaStatus | None]] = {}
        self._loops = BackgroundTasks(log)
        self._wake = asyncio.Event()
        self._started = False
        self._last_scan = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables (unless told not to) and begin claiming unfinished sagas."""
        if self._started:
            return
        for saga in self.sagas.values():
            if not saga.steps:
                raise SagaConfigError(f"saga {saga.name!r} has no steps")
        if self._create_tables:
            await self.store.create_tables()
        self._env.stopping.clear()
        self._started = True
        self._loops.start(self._scan_loop(), name=f"saga-scan-{self.instance_id}")
        self._loops.start(self._lease_loop(), name=f"saga-lease-{self.instance_id}")

    async def stop(self, grace: float | None = None) -> None:
        """Let running steps finish (``grace`` s, default ``config.stop_grace``), then hand the
        unfinished sagas back so another instance can continue them at once."""
        if not self._started:
            return
        self._started = False
        self._env.stopping.set()
        await self._loops.stop()
        held = list(self._active)
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.stop_grace if grace is None else grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.store.release(self.instance_id, held)
        except Exception as exc:  # the leases expire on their own
            log.warning(
                "could not release %d sagas at stop (they resume after the lease): %s", len(held), exc
            )

    async def __aenter__(self) -> SagaOrchestrator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def wake(self) -> None:
        """Look for claimable sagas now (after committing one started with ``run(session=…)``)."""
        self._wake.set()

    async def healthy(self) -> bool:
        """For a readiness check: the claim loop ran recently (the database answers)."""
        return self._started and time.monotonic() - self._last_scan < max(3 * self.config.poll_interval, 5.0)

    # -- starting and waiting --------------------------------------------------------------------

    async def run(
        self,
        name: str,
        data: BaseModel | Mapping[str, Any],
        *,
        saga_id: str | None = None,
        session: AsyncSession | None = None,
    ) -> str:
        """Start saga ``name`` with ``data``; returns its id at once (see :meth:`wait`).

        ``saga_id`` makes the start idempotent: a second ``run`` with the same id returns it
        without starting anything (use the order id, say). With ``session`` the saga is
        inserted in the caller's transaction — it exists if and only if the caller commits —
        and starts at the next scan (call :meth:`wake` after the commit).
        """
        if not self._started:
            raise SagaStateError("start the orchestrator before running sagas")
        saga = self._saga(name)
        value = saga.validate_data(data)
        request_id, traceparent, tracestate = start_ids()
        record = SagaRecord(
            id=saga_id or new_event_id(),
            name=name,
            status=SagaStatus.RUNNING,
            data=value.model_dump(mode="json"),
            current_step=0,
            version=1,
            created_at=time.time(),
            request_id=request_id,
            traceparent=traceparent,
            tracestate=tracestate,
            steps={s.name: StepRecord(s.name, i) for i, s in enumerate(saga.steps)},
        )
        if session is not None:
            if saga_id is not None and await self._existing(session, saga_id, name):
                return saga_id
            await self.store.insert(session, record, owner=None, lease=0)
            self._started_log(record)
            return record.id
        try:
            async with self.store.sessions() as own, own.begin():
                await self.store.insert(own, record, owner=self.instance_id, lease=self.config.lease)
        except IntegrityError:
            if saga_id is None:
                raise
            async with self.store.sessions() as own:
                if await self._existing(own, saga_id, name):
                    return saga_id
            raise
        self._started_log(record)
        self._spawn(record, resumed=False)
        return record.id

    async def _existing(self, session: AsyncSession, saga_id: str, name: str) -> bool:
        found = await self.store.exists(session, saga_id)
        if found is not None and found != name:
            raise SagaStateError(f"saga id {saga_id!r} is already used by a {found!r} saga, not {name!r}")
        return found is not None

    def _started_log(self, record: SagaRecord) -> None:
        self._env.metrics.started.labels(record.name).inc()
        log.info("saga %s started", record.id, extra=log_fields(record.id, record.name))

    async def wait(self, saga_id: str, timeout: float | None = None) -> SagaState:
        """The saga's state once it is finished (completed, compensated or failed).

        Works for sagas any instance drives (it re-reads the database); raises
        :class:`SagaTimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = await self.store.state(saga_id)
            if state.status.is_finished:
                return state
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise SagaTimeoutError(f"saga {saga_id} is still {state.status.value} after {timeout} s")
            task = self._active.get(saga_id)
            if task is not None:
                # Driven here: no polling, the task's end is the moment to look again.
                await asyncio.wait({task}, timeout=left)
            else:
                await asyncio.sleep(
                    self.config.poll_interval if left is None else min(left, self.config.poll_interval)
                )

    # -- queries and operator actions ------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaState:
        """The saga's persisted state: status, data, each step; :class:`SagaNotFoundError` if none."""
        return await self.store.state(saga_id)

    async def list(
        self,
        *,
        statuses: Iterable[SagaStatus] | None = None,
        name: str | None = None,
        stuck_after: float | None = None,
        limit: int = 100,
    ) -> builtins.list[SagaSummary]:
        return await self.store.list(statuses=statuses, name=name, stuck_after=stuck_after, limit=limit)

    async def needs_attention(
        self, *, stuck_after: float = 300.0, limit: int = 100
    ) -> builtins.list[SagaSummary]:
        """Failed sagas, and unfinished ones without progress for ``stuck_after`` seconds."""
        return await self.store.needs_attention(stuck_after=stuck_after, limit=limit)

    async def retry(self, saga_id: str) -> None:
        """Compensate a ``failed`` saga again with a fresh budget (after fixing the cause)."""
        await self.store.retry(saga_id)
        self.wake()

    # -- claiming and driving --------------------------------------------------------------------

    def _saga(self, name: str) -> Saga[Any]:
        saga = self.sagas.get(name)
        if saga is None:
            raise SagaNotFoundError(
                name, f"no saga named {name!r} is registered (known: {sorted(self.sagas)})"
            )
        return saga

    async def _scan_loop(self) -> None:
        failures = FailureLog(log, "saga claim scan")
        while True:
            try:
                await self._claim()
                self._last_scan = time.monotonic()
                failures.succeeded()
            except Exception as exc:  # the database is down: keep what we hold, try again
                failures.failed(
                    "saga claim scan failed, retrying every %.3g s: %s", self.config.poll_interval, exc
                )
            self._wake.clear()
            await woken(self._wake, self.config.poll_interval)

    async def _claim(self) -> None:
        capacity = self.config.max_concurrent - len(self._active)
        ids = await self.store.claim(
            self.sagas, self.instance_id, self.config.lease, capacity, exclude=self._active
        )
        for saga_id in ids:
            try:
                record = await self.store.load(saga_id)
            except SagaNotFoundError:
                continue  # purged between the claim and the load
            self._spawn(record, resumed=True)

    async def _lease_loop(self) -> None:
        lease = self.config.lease
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            held = list(self._active)
            try:
                lost = await self.store.renew(self.instance_id, held, lease)
            except Exception as exc:
                late = time.monotonic() - last_renewed
                log.warning("could not renew saga leases (%.1f s since the last renewal): %s", late, exc)
                if late > lease * 0.8:
                    # Another instance may take our sagas soon: stop driving them first.
                    self._cancel(held, "its lease could not be renewed")
                continue
            last_renewed = time.monotonic()
            self._cancel(lost, "another instance holds it now")

    def _cancel(self, saga_ids: Iterable[str], why: str) -> None:
        for saga_id in saga_ids:
            task = self._active.get(saga_id)
            if task is not None and not task.done():
                log.warning("stopping saga %s: %s", saga_id, why, extra={"saga_id": saga_id})
                task.cancel()

    def _spawn(self, record: SagaRecord, *, resumed: bool) -> None:
        execution = Execution(self._env, self._saga(record.name), record)
        task = asyncio.create_task(self._drive(execution, resumed), name=f"saga-{record.id}")
        self._active[record.id] = task
        self._env.metrics.in_progress.inc()

    async def _drive(self, execution: Execution, resumed: bool) -> SagaStatus | None:
        record = execution.record
        fields = log_fields(record.id, record.name)
        try:
            if resumed:
                self._env.metrics.resumed.labels(record.name).inc()
                log.info("resuming saga %s (%s)", record.id, record.status.value, extra=fields)
            return await execution.drive()
        except SagaLeaseLostError as exc:
            log.warning("%s", exc, extra=fields)
        except Exception:
            # Our own machinery failed (the database went away mid-write): hand the saga back so
            # the next scan (here or elsewhere) resumes it from its persisted state; if even that
            # fails, the lease runs out.
            log.exception(
                "saga %s stopped on an unexpected error; it will be resumed", record.id, extra=fields
            )
            with contextlib.suppress(Exception):
                await self.store.release(self.instance_id, [record.id])
        finally:
            self._active.pop(record.id, None)
            self._env.metrics.in_progress.dec()
        return None
