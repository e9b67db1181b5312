"""Revocations pushed to the gateway over the event bus, with the polled feed as the catch-up.

The security service publishes a :class:`~edgeway.security.revocation.TokenRevokedEvent` per
revoked token through its outbox. Each gateway instance follows the ``revocations`` channel as a
*broadcast* member (a private, non-durable subscription: every instance gets every event, nothing
is kept for an instance that is gone), so a revoked token stops working everywhere within
milliseconds. The polled feed (:class:`~edgeway.security.revocation.RevocationFeed`) covers what
the push cannot:

* at start, the subscription is made first and the feed polled after, so nothing revoked before
  falls between the two;
* while the push is down (the broker unreachable at start, or the link lost later) the feed polls
  every ``fallback_interval`` (2 s by default) instead of its slow ``interval``, and the gateway
  says so in its log, its ``/readyz`` detail and ``edgeway_gateway_revocations_push_up``;
* when the push is back the feed is polled at once (events published meanwhile were kept for
  nobody) and stays on the fast interval for :data:`SETTLE` more seconds, then slows down.

The gateway never stops serving for the bus: revoked tokens it already knows of stay refused (the
list is only ever added to, and pruned at expiry), and new ones still arrive by polling.

States (:class:`PushState`)::

    CONNECTING ──subscribed──▶ UP ──link lost──▶ RECONNECTING
        ▲  │ (retried, backing off)   ▲                │
        └──┘                          └───reconnected──┘

In ``RECONNECTING`` the broker client (nats-py, aio-pika) reconnects on its own and the
subscription resumes; the component only watches ``transport.connected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import Any

from edgeway.bus.brokers import safe_url, transport_for
from edgeway.bus.bus import EventBus
from edgeway.discovery.source import reraise_cancellation, retry_delay
from edgeway.gateway.filters.auth.config import RevocationBus
from edgeway.security.revocation import RevocationFeed, RevocationSubscriber
from edgeway.tasks import cancel_and_wait

log = logging.getLogger("edgeway.gateway.filters.auth.filter")

GROUP = "gateway-revocations"  # a broadcast group: each instance has its own subscription
WATCH_INTERVAL = 0.5  # seconds between looks at the link: a lost broker is noticed within this
# After a reconnect a NATS broadcast member whose consumer the restarted server forgot makes a new
# one on its next pull, up to ~3 s later (edgeway.bus.nats.subscription: 1 s expiry + 2 s grace);
# events published in between reach this gateway only by polling, so it keeps polling fast a while.
SETTLE = 5.0
FIRST_RETRY = 0.5  # seconds before the second connection attempt; doubling up to retry_interval


class PushState(enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"  # not subscribed yet: the broker could not be reached; retrying
    UP = "up"  # subscribed, connected
    RECONNECTING = "reconnecting"  # subscribed; the link is lost and the client reconnects

    @property
    def is_up(self) -> bool:
        return self is PushState.UP


class RevocationPush:
    """The push half of a gateway's revocations; :class:`~edgeway.gateway.filters.auth.tokens.EdgeAuth`
    starts it before its feed and stops it with it. See the module docstring."""

    def __init__(self, config: RevocationBus, feed: RevocationFeed, *, poll_interval: float) -> None:
        self.config = config
        self.feed = feed
        self.poll_interval = poll_interval  # the feed's interval while the push is up
        self.broker = safe_url(config.url)
        self.bus = EventBus(transport_for(config.url, config.prefix))
        self.subscriber = RevocationSubscriber(self.bus, feed.revocations, group=GROUP)
        self.state = PushState.STOPPED
        self.since = time.time()  # when the state last changed
        self.last_error: str | None = None
        self._failures = 0  # consecutive failed connection attempts
        self._next_attempt = 0.0  # loop time of the next attempt while CONNECTING
        self._slow_down_at: float | None = None  # loop time to go back to the slow poll
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe if the broker answers within ``connect_timeout``; serve either way."""
        self._set(PushState.CONNECTING)
        if await self._subscribe():
            self._set(PushState.UP)
            self.feed.set_interval(self.poll_interval)
            log.info("revocations are pushed from %s", self.broker)
        else:
            self.feed.set_interval(float(self.config.fallback_interval))
        self._task = asyncio.create_task(self._watch(), name="edgeway-revocation-push")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._close_bus()
        self._set(PushState.STOPPED)

    def report(self) -> dict[str, Any]:
        """The push's state for ``/readyz``."""
        return {
            "state": self.state.value,
            "since": round(self.since, 3),
            "broker": self.broker,
            "received": self.subscriber.received,
            "last_error": self.last_error,
        }

    # -- the link ----------------------------------------------------------------------------------
    async def _subscribe(self) -> bool:
        try:
            async with asyncio.timeout(float(self.config.connect_timeout)):
                await self.bus.start()
        except Exception as exc:
            # Besides the bus's TransportError the broker libraries raise their own errors (aio-pika's
            # while subscribing, nats-py's on a connection closing under it): none of them may stop
            # the gateway, which serves with the polled feed meanwhile.
            reraise_cancellation()
            await self._failed(exc)
            return False
        self._failures = 0
        self.last_error = None
        return True

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        delay = retry_delay(self._failures, FIRST_RETRY, float(self.config.retry_interval))
        self._next_attempt = asyncio.get_running_loop().time() + delay
        if self._failures == 1:  # once per outage, not per attempt
            log.warning(
                "revocation push is down: cannot subscribe at %s (%s); revoked tokens arrive by "
                "polling %s every %gs until it is back",
                self.broker,
                self.last_error,
                self.feed.url,
                float(self.config.fallback_interval),
            )
        await self._close_bus()

    async def _close_bus(self) -> None:
        with contextlib.suppress(Exception):  # closing a half-open client: nothing left to save
            await self.bus.stop()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self._step(loop.time())
            except Exception:
                # A bug here must not end the watch (nor the push with it) for good.
                log.exception("revocation push: watching the link failed; watching on")

    async def _step(self, now: float) -> None:
        state = self.state
        if state is PushState.CONNECTING:
            if now >= self._next_attempt and await self._subscribe():
                await self._back(now, "subscribed")
        elif state is PushState.UP:
            if not self.bus.transport.connected:
                self._lost()
            elif self._slow_down_at is not None and now >= self._slow_down_at:
                self._slow_down_at = None
                self.feed.set_interval(self.poll_interval)
        elif state is PushState.RECONNECTING and self.bus.transport.connected:
            await self._back(now, "reconnected")

    def _lost(self) -> None:
        self._set(PushState.RECONNECTING)
        self.last_error = "the connection to the broker was lost"
        self._slow_down_at = None
        self.feed.set_interval(float(self.config.fallback_interval))
        log.warning(
            "revocation push is down: lost the broker at %s; revoked tokens arrive by polling %s "
            "every %gs until it is back",
            self.broker,
            self.feed.url,
            float(self.config.fallback_interval),
        )

    async def _back(self, now: float, how: str) -> None:
        self._set(PushState.UP)
        self.last_error = None
        log.warning(
            "revocation push is back (%s at %s); catching up by polling %s", how, self.broker, self.feed.url
        )
        # What was published while the push was down was kept for nobody: fetch it now.
        await self.feed.poll_safely()
        self._slow_down_at = now + SETTLE

    def _set(self, state: PushState) -> None:
        if state is not self.state:
            self.state = state
            self.since = time.time()
