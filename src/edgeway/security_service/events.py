"""Revocations (and user changes) pushed over the event bus: the outbox the store writes into,
and its relay.

With ``bus_url`` set, every revocation (logout, refresh-token reuse, a disabled account) queues a
:class:`~edgeway.security.revocation.TokenRevokedEvent` event per access token in the same
transaction as the deny-list row, and the relay publishes it as soon as the request commits
(:meth:`RevocationEvents.committed` wakes it). User changes queue their events
(:mod:`edgeway.security.events`) the same way, for services' local copies of the users. The
broker being down never fails a request or the start-up: the relay connects and publishes in the
background, retrying, and gateways catch up through ``GET /revocations`` meanwhile.

Given the service's tracer, writing the events is a PRODUCER span (``create revocations``, or
``create revocations,users``) in the trace of the request that revoked, and the events name it as
their parent: a gateway's ``process revocations`` span then joins that trace (as the kit services'
outboxes do, :mod:`edgeway.bus.tracing`). Without one the events still carry the request's id and
trace context, in the outbox row and on the message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from edgeway.bus.brokers import transport_for
from edgeway.bus.bus import EventBus
from edgeway.bus.errors import BusError
from edgeway.bus.outbox import Outbox, OutboxRelay
from edgeway.bus.transport import ChannelConfig
from edgeway.observability.logs import FailureLog
from edgeway.security.events import USERS_CHANNEL
from edgeway.security.revocation import REVOCATIONS
from edgeway.security_service import db
from edgeway.service.database import Database
from edgeway.tasks import BackgroundTasks

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("edgeway.security_service")

RETRY_INTERVAL = 2.0


class RevocationEvents:
    """The service's publishing side of revocations. See the module docstring."""

    def __init__(
        self, url: str, prefix: str, database: Database, *, replicas: int = 1, tracer: Tracer | None = None
    ) -> None:
        self.outbox = Outbox(db.metadata, table_name=db.outbox.name, tracer=tracer)
        # ``replicas`` is the deployment's bus_replicas, as the kit services declare their
        # channels with: two declarations of one stream that disagree would keep resizing it.
        channels = [
            dataclasses.replace(REVOCATIONS, replicas=replicas),
            ChannelConfig(USERS_CHANNEL, replicas=replicas),
        ]
        self.bus = EventBus(transport_for(url, prefix), channels=channels, tracer=tracer)
        self.relay = OutboxRelay(
            self.outbox, database.sessions, self.bus, retry_interval=RETRY_INTERVAL, idle_interval=1.0
        )
        self._tasks = BackgroundTasks(log)

    def start(self) -> None:
        self._tasks.start(self._connect(), name="edgeway-security-revocation-events")

    async def _connect(self) -> None:
        failures = FailureLog(log, "the event bus connection")
        while True:
            try:
                await self.bus.start()
                failures.succeeded()
                break
            except BusError as exc:
                failures.failed("event bus unreachable, revocations go by /revocations only for now: %s", exc)
                await asyncio.sleep(RETRY_INTERVAL)
        self.relay.start()

    def committed(self) -> None:
        """A revocation committed: publish now rather than at the relay's next idle poll."""
        self.relay.wake()

    async def stop(self) -> None:
        await self._tasks.stop()
        await self.relay.stop()
        await self.bus.stop()
