""" "Make sure all N services got the message": a step that waits for acknowledgements.

The step publishes a request event once (every consumer group gets it) and waits for an
:class:`Acknowledgement` from each named service. Services that have not answered get the event
again, addressed to their consumer group only (the bus's targeted redelivery), after a backoff;
when every service answered, or the deadline passed, the step ends with an :class:`AckReport`
— who answered when, who did not, how often each was sent the event — stored as its result.
With ``require_all=True`` a missing answer fails the step instead (and compensation starts),
the report still stored.

Receiving side: the handler calls :func:`acknowledge` after doing its work::

    @bus.subscribe(PriceChanged, group="billing")
    async def on_price(event: PriceChanged, ctx: Received) -> None:
        apply(event)
        await acknowledge(bus, ctx)        # answers as "billing", the group name

Acknowledgements come back on the ``edgeway-acks`` channel. The orchestrator subscribes to it
with the group ``<service>-saga-acks``, so replicas share them and every replica can record any
ack in the saga database: the replica waiting for it sees it at its next poll even when another
replica's consumer got it. Acks reach the step after a crash too, because they are stored.

Re-sends carry a new message id (an inbox would drop a repeated one, and a service whose ack was
lost must get a chance to answer again), so the receiving handler may run more than once for the
same request: make it idempotent, e.g. by the ``ew-ack-key`` header (``<saga id>:<step>``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.errors import BusConfigError, TransportError
from edgeway.bus.events import Envelope, Event, envelope_for, new_event_id
from edgeway.bus.transport import Backoff, check_group
from edgeway.saga.definition import Compensation, Retry, Saga, Step, StepContext
from edgeway.saga.errors import AcksMissingError, RetryableError, SagaConfigError
from edgeway.saga.store import SagaStore
from edgeway.saga.telemetry import log_fields
from edgeway.tasks import woken

log = logging.getLogger("edgeway.saga.acks")

D = TypeVar("D", bound=BaseModel)

H_ACK_KEY = "ew-ack-key"
H_ACK_SAGA = "ew-ack-saga"
H_ACK_STEP = "ew-ack-step"
H_ACK_ORIGIN = "ew-ack-origin"


class Acknowledgement(Event):
    """ "I got it": sent by a service for a request event that carried ``ew-ack-*`` headers."""

    channel = "edgeway-acks"
    event_type = "edgeway.saga.ack.v1"

    key: str
    saga_id: str
    step: str
    origin: str
    service: str
    message_id: str | None = None


class AckReport(BaseModel):
    """The result of an acknowledgement step."""

    services: list[str]
    acked: dict[str, datetime]
    missing: list[str]
    sends: dict[str, int]
    deadline_at: datetime

    @property
    def complete(self) -> bool:
        return not self.missing


def ack_event(received: Received, *, service: str | None = None) -> Acknowledgement | None:
    """The acknowledgement for a received request, or ``None`` if nobody asked for one.

    Publish it yourself (e.g. through the outbox, in the handler's transaction), or call
    :func:`acknowledge`. ``service`` defaults to the consumer group's name.
    """
    headers = received.envelope.headers
    key = headers.get(H_ACK_KEY)
    saga_id = headers.get(H_ACK_SAGA)
    step = headers.get(H_ACK_STEP)
    if key is None or saga_id is None or step is None:
        return None
    return Acknowledgement(
        key=key,
        saga_id=saga_id,
        step=step,
        origin=headers.get(H_ACK_ORIGIN, ""),
        service=service or received.group,
        message_id=received.id,
    )


async def acknowledge(bus: EventBus, received: Received, *, service: str | None = None) -> bool:
    """Publish the acknowledgement for ``received``; ``False`` if it asked for none."""
    ack = ack_event(received, service=service)
    if ack is None:
        return False
    await bus.publish(ack)
    return True


class AckTracker:
    """The orchestrator's side: records acknowledgements and runs acknowledgement steps."""

    def __init__(self, store: SagaStore, bus: EventBus, service: str, *, poll_interval: float = 0.5) -> None:
        check_group(f"{service}-saga-acks")
        self.store = store
        self.bus = bus
        self.service = service
        self.poll_interval = poll_interval
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}
        try:
            bus.add_handler(Acknowledgement, self._on_ack, group=f"{service}-saga-acks")
        except BusConfigError as exc:
            raise SagaConfigError(
                f"cannot subscribe to acknowledgements: {exc} (create the SagaOrchestrator before "
                "starting the bus)"
            ) from exc

    async def _on_ack(self, ack: Acknowledgement, received: Received) -> None:
        if ack.origin != self.service:
            return  # another service's saga: its own orchestrator records it
        fresh = await self.store.record_ack(ack.saga_id, ack.step, ack.service, received.id)
        if fresh:
            log.info(
                "acknowledgement from %s",
                ack.service,
                extra=log_fields(ack.saga_id, "", ack.step, service=ack.service),
            )
        waiter = self._waiters.get((ack.saga_id, ack.step))
        if waiter is not None:
            waiter.set()

    async def broadcast(
        self,
        ctx: StepContext[Any],
        event: Event,
        services: Sequence[str],
        *,
        deadline: float,
        resend: Backoff,
        require_all: bool,
    ) -> AckReport:
        """Publish ``event``, re-send to the silent, and report; see the module docstring."""
        # The deadline counts from the step's first start, so a retry or a resume after a crash
        # does not extend it.
        deadline_at = ctx.started_at + deadline
        headers = {
            **ctx.trace_headers,
            H_ACK_KEY: ctx.key,
            H_ACK_SAGA: ctx.saga_id,
            H_ACK_STEP: ctx.step,
            H_ACK_ORIGIN: self.service,
        }
        envelope = envelope_for(event, headers)
        sends = dict.fromkeys(services, 0)
        waiter = self._waiters.setdefault((ctx.saga_id, ctx.step), asyncio.Event())
        try:
            acked = await self.store.acks(ctx.saga_id, ctx.step)
            if ctx.attempt == 1 and not acked:
                await self.bus.publish_envelope(envelope)
                for service in services:
                    sends[service] += 1
            else:  # a retry or a resume: only the silent ones need it again
                await self._resend(envelope, [s for s in services if s not in acked], sends)
            rounds = 1
            next_send = time.time() + resend.delay(rounds)
            while True:
                missing = [s for s in services if s not in acked]
                now = time.time()
                if not missing or now >= deadline_at:
                    break
                if now >= next_send:
                    await self._resend(envelope, missing, sends)
                    rounds += 1
                    next_send = now + resend.delay(rounds)
                waiter.clear()
                wait = min(next_send, deadline_at, now + self.poll_interval) - time.time()
                await woken(waiter, max(0.0, wait))
                acked = await self.store.acks(ctx.saga_id, ctx.step)
        except TransportError as exc:
            raise RetryableError(f"publishing the request failed: {exc}") from exc
        finally:
            self._waiters.pop((ctx.saga_id, ctx.step), None)
        report = AckReport(
            services=list(services),
            acked={s: datetime.fromtimestamp(t, UTC) for s, t in acked.items() if s in sends},
            missing=missing,
            sends=sends,
            deadline_at=datetime.fromtimestamp(deadline_at, UTC),
        )
        fields = log_fields(ctx.saga_id, ctx.saga_name, ctx.step, missing=missing)
        if missing:
            log.warning("no acknowledgement from %s before the deadline", ", ".join(missing), extra=fields)
            if require_all:
                raise AcksMissingError(ctx.step, missing, report.model_dump(mode="json"))
        else:
            log.info("every service acknowledged", extra=fields)
        return report

    async def _resend(self, envelope: Envelope, services: Sequence[str], sends: dict[str, int]) -> None:
        channel = self.bus.channel(envelope.channel)
        for service in services:
            await self.bus.transport.redeliver(
                channel, service, replace(envelope, id=new_event_id(), time=time.time())
            )
            sends[service] += 1


def ack_step(
    saga: Saga[D],
    name: str,
    *,
    event: Callable[[StepContext[D]], Event],
    services: Sequence[str],
    deadline: float = 30.0,
    resend: Backoff | None = None,
    require_all: bool = False,
    compensate: Compensation[D] | None = None,
) -> Step[D]:
    """Append a step that publishes ``event(ctx)`` and waits for every service in ``services``.

    ``services`` are the consumer group names of the receiving services. ``deadline`` is how long
    to wait in total (seconds, from the step's first start); ``resend`` the backoff between
    re-sends to those who have not answered (default 1 s doubling to 10 s). The stored result
    is an :class:`AckReport`. See the module docstring.
    """
    names = list(services)
    if not names:
        raise SagaConfigError(f"ack step {name!r}: name at least one service to wait for")
    if len(set(names)) != len(names):
        raise SagaConfigError(f"ack step {name!r}: services are listed twice: {names}")
    for service in names:
        try:
            check_group(service)
        except BusConfigError as exc:
            raise SagaConfigError(f"ack step {name!r}: {exc}") from exc
    if deadline <= 0:
        raise SagaConfigError(f"ack step {name!r}: deadline must be > 0 seconds")
    backoff = resend if resend is not None else Backoff(initial=1.0, factor=2.0, maximum=10.0)

    async def wait_for_acks(ctx: StepContext[D]) -> AckReport:
        return await ctx.acks.broadcast(
            ctx, event(ctx), names, deadline=deadline, resend=backoff, require_all=require_all
        )

    return saga.add_step(
        name,
        wait_for_acks,
        compensate=compensate,
        # The step ends by itself at the deadline; the timeout only catches a hung publish.
        timeout=deadline + max(5.0, deadline / 2),
        retry=Retry(attempts=5, on=(RetryableError, ConnectionError)),
    )
