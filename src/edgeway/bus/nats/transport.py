"""The NATS JetStream transport.

Layout on the server, for channel ``orders`` and prefix ``ew``:

* stream ``EW_orders`` with subjects ``ew.orders.e.<key>`` (published events; the event key is
  a subject token so a future partitioned consumer can filter on it) and ``ew.orders.g.<group>``
  (a replay aimed at one group; other groups' members skip it, since per-consumer
  ``filter_subjects`` needs nats-server 2.10 and 2.9 is still common); ``max_age`` is the
  broker-side TTL, ``duplicate_window`` the de-duplication window for ``Nats-Msg-Id`` (capped at
  ``max_age``, which the server requires).
* one durable pull consumer per group (its name is the group): every member of a group fetches
  from it, so they compete; every group has its own consumer, so each gets every event.
  ``max_deliver`` is the channel's plus one: the extra delivery lets the bus dead-letter a
  message whose consumer kept crashing instead of the server silently giving up on it.
* stream ``EW_DLQ_orders`` with subjects ``ew.orders.dlq.<group>`` holding dead letters, kept
  until replayed or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from edgeway.bus.errors import DeadLetterNotFoundError, PublishError, TransportError
from edgeway.bus.events import Envelope, new_event_id
from edgeway.bus.nats.confirms import Confirms, Outgoing
from edgeway.bus.nats.delivery import H_MSG_ID, NatsDelivery, envelope_from
from edgeway.bus.nats.subscription import NatsSubscription
from edgeway.bus.nats_liveness import LIVENESS, reconnect_forever
from edgeway.bus.transport import BatchHandler, ChannelConfig, DeadLetter, Delivery, check_group
from edgeway.bus.urls import nats_servers, safe_url
from edgeway.observability.logs import FailureLog

log = logging.getLogger("edgeway.bus.nats")

H_REASON = "ew-dead-reason"
H_GROUP = "ew-dead-group"
H_DEAD_AT = "ew-dead-at"
H_ATTEMPTS = "ew-dead-attempts"
_DLQ_ONLY = frozenset({H_MSG_ID, H_REASON, H_GROUP, H_DEAD_AT, H_ATTEMPTS})


class _DeclaredMeanwhile(nats.errors.Error):
    """add_stream said the stream exists, update_stream did not find it: another process is
    creating it on another server of the cluster, and the two answers crossed. Tried again."""


# What JetStream answers while it cannot serve its API yet: no answer in time, no responder
# (JetStream not up on the server reached), 503 (the meta or stream leader being elected), and
# the crossed answers of two processes declaring one stream at once.
_JETSTREAM_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    _DeclaredMeanwhile,
)

_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def key_token(key: str | None) -> str:
    """The event key as one subject token; keys that are not token-safe are hashed."""
    if key is None:
        return "_"
    if _SUBJECT_TOKEN.fullmatch(key):
        return key
    return "h" + hashlib.sha1(key.encode()).hexdigest()[:20]


class _Names:
    __slots__ = ("dlq_stream", "dlq_subjects", "events", "groups", "stream")

    def __init__(self, prefix: str, channel: str) -> None:
        self.stream = f"{prefix.upper()}_{channel}"
        self.dlq_stream = f"{prefix.upper()}_DLQ_{channel}"
        self.events = f"{prefix}.{channel}.e"
        self.groups = f"{prefix}.{channel}.g"
        self.dlq_subjects = f"{prefix}.{channel}.dlq"


class NatsTransport:
    """:class:`~edgeway.bus.transport.Transport` over NATS JetStream. See the module docstring.

    ``servers`` is a URL, a comma-separated list of them or a list of cluster URLs
    (:func:`edgeway.bus.urls.nats_servers`); nats-py reconnects across them.
    ``publish_window`` bounds the publishes awaiting the stream's acknowledgement (see
    :mod:`edgeway.bus.nats.confirms`); ``publish_timeout`` is how long one may wait for it,
    and a batch that hears no ack for ``publish_resend_after`` is sent again (same message ids).
    """

    name = "nats"

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "ew",
        client_name: str | None = None,
        publish_timeout: float = 5.0,
        publish_resend_after: float = 1.0,
        publish_window: int = 2000,
        declare_timeout: float = 30.0,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
            raise TransportError(f"invalid NATS prefix {prefix!r}: use 1-16 lower-case letters and digits")
        self.servers = nats_servers(servers)
        self.prefix = prefix
        self.client_name = client_name
        self.publish_timeout = publish_timeout
        self.publish_resend_after = publish_resend_after
        self.publish_window = publish_window
        # How long a stream or consumer declaration is retried while JetStream cannot answer
        # (a restarted server catching up, a leader election): then it fails as before.
        self.declare_timeout = declare_timeout
        self._nc: Any = None
        self._js: Any = None
        self._confirms: Confirms | None = None
        self._names: dict[str, _Names] = {}
        self._subscriptions: list[NatsSubscription] = []

    # -- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def connect(self) -> None:
        """Connect, or raise :class:`TransportError` at once if no server answers; once connected,
        reconnect forever (in-flight publishes and pulls resume, see confirms and subscription).

        nats-py applies its reconnect settings to the first connection too: with unlimited
        reconnects ``nats.connect`` would never return while the broker is down. So the first
        connection allows one quick retry per server, then the limit is lifted; nats-py reads
        these options again on every disconnect.
        """
        if self._nc is not None and self._nc.is_connected:
            return
        try:
            self._nc = await nats.connect(
                servers=self.servers,
                name=self.client_name,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                connect_timeout=5,
                error_cb=_on_error,
                disconnected_cb=_on_disconnect,
                reconnected_cb=self._on_reconnect,
                **LIVENESS,
            )
            reconnect_forever(self._nc, 0.5)
            self._confirms = Confirms(
                self._nc,
                window=self.publish_window,
                timeout=self.publish_timeout,
                resend_after=self.publish_resend_after,
            )
            await self._confirms.start()
        except (OSError, nats.errors.Error) as exc:
            servers = ", ".join(map(safe_url, self.servers))
            raise TransportError(f"cannot connect to NATS at {servers}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=self.publish_timeout)

    async def _on_reconnect(self) -> None:
        log.info(
            "nats: reconnected to %s", safe_url(str(self._nc.connected_url.geturl())) if self._nc else "?"
        )
        for sub in self._subscriptions:
            sub.reconnected()

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        if self._confirms is not None:
            await self._confirms.close()
            self._confirms = None
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()
            self._nc = None
            self._js = None

    @property
    def js(self) -> Any:
        if self._js is None:
            raise TransportError("the NATS transport is not connected; call connect() (or start the bus)")
        return self._js

    def names(self, channel: str) -> _Names:
        names = self._names.get(channel)
        if names is None:
            names = self._names[channel] = _Names(self.prefix, channel)
        return names

    # -- declarations ----------------------------------------------------------------------------

    async def declare(self, channel: ChannelConfig) -> None:
        names = self.names(channel.name)
        max_age = channel.broker_max_age
        window = channel.duplicate_window if max_age is None else min(channel.duplicate_window, max_age)
        await self._ensure_stream(
            api.StreamConfig(
                name=names.stream,
                subjects=[f"{names.events}.>", f"{names.groups}.>"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=max_age,
                duplicate_window=window,
                num_replicas=channel.replicas,
            )
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=names.dlq_stream,
                subjects=[f"{names.dlq_subjects}.>"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=channel.duplicate_window,
                num_replicas=channel.replicas,
            )
        )

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        async def ensure() -> None:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Exists with other settings: bring it to what the code now says (max_age etc.).
                try:
                    await self.js.update_stream(config)
                except nats.js.errors.NotFoundError as exc:
                    raise _DeclaredMeanwhile(str(exc)) from exc

        try:
            await self._declaring(f"stream {config.name}", ensure)
        except (nats.errors.Error, OSError) as exc:
            raise TransportError(f"cannot declare stream {config.name}: {exc}") from exc

    async def _declaring(self, what: str, declare: Callable[[], Awaitable[None]]) -> None:
        """Run ``declare``, retrying with backoff (0.25 s doubling up to 5 s) for up to
        ``declare_timeout`` seconds while JetStream cannot answer: a server restarted while its
        cluster catches up, or a stream leader being elected, times out or answers 503 for a few
        seconds, and a service starting then should wait, not exit. Any other error is raised at
        once (a configuration the server refuses stays refused)."""
        deadline = time.monotonic() + self.declare_timeout
        failures = FailureLog(log, f"declaring {what}")
        delay = 0.25
        while True:
            try:
                await declare()
            except _JETSTREAM_UNAVAILABLE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                failures.failed(
                    "JetStream cannot declare %s yet (%s: %s); retrying for up to %.0f s more",
                    what,
                    type(exc).__name__,
                    exc,
                    left,
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
                continue
            failures.succeeded()
            return

    def _consumer_config(
        self, channel: ChannelConfig, *, deliver: api.DeliverPolicy, group: str | None = None
    ) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=group,
            name=group,
            deliver_policy=deliver,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=channel.ack_wait,
            max_deliver=channel.max_deliver + 1,
            max_ack_pending=10_000,
        )

    async def declare_group(self, channel: ChannelConfig, group: str) -> None:
        check_group(group)
        names = self.names(channel.name)
        config = self._consumer_config(channel, deliver=api.DeliverPolicy.ALL, group=group)

        async def ensure() -> None:
            try:
                await self.js.add_consumer(names.stream, config)
            except nats.js.errors.BadRequestError:
                await self.js.add_consumer(names.stream, config)  # an upsert since 2.10

        try:
            await self._declaring(f"consumer {group} on {names.stream}", ensure)
        except (nats.errors.Error, OSError) as exc:
            raise TransportError(f"cannot create consumer {group} on {names.stream}: {exc}") from exc

    # -- publishing ------------------------------------------------------------------------------

    def _wire(self, envelope: Envelope) -> Outgoing:
        token = key_token(envelope.key)
        # Nats-Msg-Id carries the id, and the subject the key when it is a token ("_" on the
        # subject means "no key"), so a key that is not one still travels in ew-key
        # (delivery.envelope_from reads both back).
        headers = envelope.to_headers(id_header=H_MSG_ID, key=token != envelope.key or token == "_")
        return f"{self.names(envelope.channel).events}.{token}", envelope.payload, headers, envelope.id

    @property
    def confirms(self) -> Confirms:
        if self._confirms is None:
            raise TransportError("the NATS transport is not connected; call connect() (or start the bus)")
        return self._confirms

    async def publish(self, envelope: Envelope) -> None:
        await self.confirms.publish([self._wire(envelope)])

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        await self.confirms.publish([self._wire(e) for e in envelopes])

    # -- consuming -------------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: ChannelConfig,
        group: str,
        handler: BatchHandler,
        *,
        batch_size: int = 100,
        broadcast: bool = False,
    ) -> NatsSubscription:
        check_group(group)
        names = self.names(channel.name)

        async def durable() -> str:
            await self.declare_group(channel, group)
            return group

        async def ephemeral() -> str:
            # Its own consumer, from now on; the server deletes it once nobody pulls for a minute
            # (a member that died), and stop() deletes it at once.
            config = self._consumer_config(channel, deliver=api.DeliverPolicy.NEW)
            config.inactive_threshold = 60.0
            created: list[str] = []

            async def create() -> None:
                info = await self.js.add_consumer(names.stream, config)
                created.append(str(info.name))

            try:
                await self._declaring(f"a consumer for {group} on {names.stream}", create)
            except (nats.errors.Error, OSError) as exc:
                reason = f"cannot create a consumer for {group} on {names.stream}: {exc}"
                raise TransportError(reason) from exc
            return created[-1]

        async def remove(name: str) -> None:
            await self.js.delete_consumer(names.stream, name)

        async def exists(name: str, timeout: float) -> bool:
            try:
                await self.js.consumer_info(names.stream, name, timeout=timeout)
            except nats.js.errors.NotFoundError:
                return False
            return True

        sub = NatsSubscription(
            self._nc,
            stream=names.stream,
            ensure_consumer=ephemeral if broadcast else durable,
            consumer_exists=exists,
            remove_consumer=remove if broadcast else None,
            channel=channel.name,
            own_replays=f"{names.groups}.{group}",
            replays=names.groups + ".",
            handler=handler,
            batch_size=batch_size,
            progress_every=channel.ack_wait / 3,
        )
        await sub.start()
        self._subscriptions.append(sub)
        return sub

    # -- dead letters ----------------------------------------------------------------------------

    async def dead_letter(self, channel: ChannelConfig, group: str, delivery: Delivery, reason: str) -> None:
        envelope = delivery.envelope
        names = self.names(channel.name)
        headers = envelope.to_headers()
        seq = delivery.stream_seq if isinstance(delivery, NatsDelivery) else 0
        # The stream sequence makes the id unique per delivery: a replayed message that fails
        # again is a new dead letter, while a crash between this publish and the term is not.
        headers[H_MSG_ID] = f"{envelope.id}.{group}.{seq}"
        headers[H_REASON] = reason[:4000]
        headers[H_GROUP] = group
        headers[H_DEAD_AT] = repr(time.time())
        headers[H_ATTEMPTS] = str(envelope.attempt)
        try:
            await self.js.publish(f"{names.dlq_subjects}.{group}", envelope.payload, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise PublishError(envelope.id, f"dead-lettering failed: {exc}") from exc
        await delivery.term()

    async def dead_letters(self, channel: ChannelConfig) -> list[DeadLetter]:
        names = self.names(channel.name)
        out: list[DeadLetter] = []
        seq = 1
        while True:
            try:
                raw = await self.js.get_msg(
                    names.dlq_stream, seq=seq, subject=f"{names.dlq_subjects}.>", next=True
                )
            except nats.js.errors.NotFoundError:
                return out
            except (nats.errors.Error, OSError) as exc:
                raise TransportError(f"cannot read {names.dlq_stream}: {exc}") from exc
            out.append(_dead_letter(channel.name, raw))
            seq = raw.seq + 1

    async def remove_dead_letter(self, channel: ChannelConfig, dead_letter_id: str) -> DeadLetter:
        names = self.names(channel.name)
        if not dead_letter_id.isdigit():
            raise DeadLetterNotFoundError(channel.name, dead_letter_id)
        try:
            raw = await self.js.get_msg(names.dlq_stream, seq=int(dead_letter_id))
            await self.js.delete_msg(names.dlq_stream, int(dead_letter_id))
        except nats.js.errors.NotFoundError:
            raise DeadLetterNotFoundError(channel.name, dead_letter_id) from None
        return _dead_letter(channel.name, raw)

    async def redeliver(self, channel: ChannelConfig, group: str, envelope: Envelope) -> None:
        await self.declare_group(channel, group)
        names = self.names(channel.name)
        headers = envelope.to_headers()
        headers[H_MSG_ID] = f"{envelope.id}.replay.{new_event_id()}"
        try:
            await self.js.publish(f"{names.groups}.{group}", envelope.payload, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise PublishError(envelope.id, f"replay failed: {exc}") from exc

    # -- history ---------------------------------------------------------------------------------

    async def history(self, channel: ChannelConfig) -> AsyncIterator[Envelope]:
        names = self.names(channel.name)
        info = await self.js.stream_info(names.stream)
        if info.state.messages == 0:
            return
        psub = await self.js.pull_subscribe(
            f"{names.events}.>",
            stream=names.stream,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.ALL,
                inactive_threshold=30.0,
            ),
        )
        try:
            while True:
                try:
                    msgs = await psub.fetch(500, timeout=2.0)
                except nats.errors.TimeoutError:
                    return
                for msg in msgs:
                    yield envelope_from(channel.name, msg.headers, msg.data, subject=msg.subject)
                if msgs[-1].metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()


async def _on_error(exc: Exception) -> None:
    # One line, no traceback: while the broker restarts nats-py reports every failed attempt.
    log.warning("nats: %s: %s", type(exc).__name__, exc)


async def _on_disconnect() -> None:
    log.warning("nats: disconnected; reconnecting")


def _dead_letter(channel: str, raw: Any) -> DeadLetter:
    headers = dict(raw.headers or {})
    try:
        dead_at = float(headers.get(H_DEAD_AT, "0"))
    except ValueError:
        dead_at = 0.0
    envelope = Envelope.from_headers(
        channel,
        {k: v for k, v in headers.items() if k not in _DLQ_ONLY},
        raw.data or b"",
        attempt=int(headers.get(H_ATTEMPTS, "1") or 1),
    )
    return DeadLetter(str(raw.seq), headers.get(H_GROUP, ""), headers.get(H_REASON, ""), dead_at, envelope)
