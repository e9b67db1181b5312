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
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from edgeway.bus.errors import DeadLetterNotFoundError, PublishError, TransportError
from edgeway.bus.events import Envelope, new_event_id
from edgeway.bus.nats.delivery import NatsDelivery
from edgeway.bus.transport import BatchHandler, ChannelConfig, DeadLetter, Delivery, check_group

H_MSG_ID = "Nats-Msg-Id"
H_REASON = "ew-dead-reason"
H_GROUP = "ew-dead-group"
H_DEAD_AT = "ew-dead-at"
H_ATTEMPTS = "ew-dead-attempts"
_DLQ_ONLY = frozenset({H_MSG_ID, H_REASON, H_GROUP, H_DEAD_AT, H_ATTEMPTS})

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

    def event_subject(self, key: str | None) -> str:
        return f"{self.events}.{key_token(key)}"


class _NatsSubscription:
    def __init__(
        self, psub: Any, names: _Names, channel: str, group: str, handler: BatchHandler, batch_size: int
    ) -> None:
        self._psub = psub
        self._own_replays = f"{names.groups}.{group}"
        self._replays = names.groups + "."
        self._channel = channel
        self._handler = handler
        self._batch_size = batch_size
        self._held: list[NatsDelivery] = []
        # One batch fetched ahead while the handler works on the current one: nats-py's fetch of
        # 500 takes ~40 ms on loopback, as long as handling them, so overlapping the two nearly
        # doubles consumer throughput (measured 9k -> 16k events/s with a no-op handler).
        self._ready: asyncio.Queue[list[NatsDelivery]] = asyncio.Queue(maxsize=1)
        self._fetcher = asyncio.create_task(self._fetch(), name=f"nats-fetch-{channel}")
        self._task = asyncio.create_task(self._run(), name=f"nats-consumer-{channel}")

    async def _fetch(self) -> None:
        while True:
            try:
                msgs = await self._psub.fetch(self._batch_size, timeout=1.0)
            except TimeoutError:
                # nats-py raises its own TimeoutError and, on fetch's deadline path, asyncio's:
                # either must not end this task (the group would silently stop consuming).
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return
            except nats.errors.Error:
                await asyncio.sleep(0.5)  # broker restarting: nats-py reconnects, keep asking
                continue
            batch = []
            for msg in msgs:
                subject = msg.subject
                if subject.startswith(self._replays) and subject != self._own_replays:
                    await msg.ack()  # a replay aimed at another group
                    continue
                batch.append(_delivery(self._channel, msg))
            if batch:
                await self._ready.put(batch)

    async def _run(self) -> None:
        while True:
            batch = await self._ready.get()
            self._held = batch
            await self._handler(batch)
            self._held = []

    async def stop(self) -> None:
        for task in (self._fetcher, self._task):
            task.cancel()
            # nats-py's fetch() converts a cancellation that lands inside its wait_for into
            # TimeoutError, so a cancelled fetcher can end with either.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task
        # Hand back what this member held so another member gets it now, not after ack_wait.
        held = list(self._held)
        while not self._ready.empty():
            held.extend(self._ready.get_nowait())
        for delivery in held:
            with contextlib.suppress(nats.errors.Error):
                await delivery.nak(0)
        with contextlib.suppress(nats.errors.Error):
            await self._psub.unsubscribe()


def _delivery(channel: str, msg: Any) -> NatsDelivery:
    meta = msg.metadata
    envelope = Envelope.from_headers(channel, msg.headers or {}, msg.data, attempt=meta.num_delivered)
    return NatsDelivery(msg, envelope, meta.sequence.stream)


class NatsTransport:
    """:class:`~edgeway.bus.transport.Transport` over NATS JetStream. See the module docstring.

    ``servers`` is a URL or a list of cluster URLs; nats-py reconnects across them.
    """

    name = "nats"

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "ew",
        client_name: str | None = None,
        publish_timeout: float = 5.0,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
            raise TransportError(f"invalid NATS prefix {prefix!r}: use 1-16 lower-case letters and digits")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.prefix = prefix
        self.client_name = client_name
        self.publish_timeout = publish_timeout
        self._nc: Any = None
        self._js: Any = None
        self._subscriptions: list[_NatsSubscription] = []

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            return
        try:
            self._nc = await nats.connect(
                servers=self.servers,
                name=self.client_name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=5,
            )
        except (OSError, nats.errors.Error) as exc:
            raise TransportError(f"cannot connect to NATS at {', '.join(self.servers)}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=self.publish_timeout)

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
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
        return _Names(self.prefix, channel)

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
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # Exists with other settings: bring it to what the code now says (max_age etc.).
            await self.js.update_stream(config)
        except (nats.errors.Error, OSError) as exc:
            raise TransportError(f"cannot declare stream {config.name}: {exc}") from exc

    async def declare_group(self, channel: ChannelConfig, group: str) -> None:
        check_group(group)
        names = self.names(channel.name)
        config = api.ConsumerConfig(
            durable_name=group,
            name=group,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=channel.ack_wait,
            max_deliver=channel.max_deliver + 1,
            max_ack_pending=10_000,
        )
        try:
            await self.js.add_consumer(names.stream, config)
        except nats.js.errors.BadRequestError:
            await self.js.add_consumer(names.stream, config)  # consumer create is an upsert since 2.10
        except (nats.errors.Error, OSError) as exc:
            raise TransportError(f"cannot create consumer {group} on {names.stream}: {exc}") from exc

    # -- publishing ------------------------------------------------------------------------------

    def _wire(self, envelope: Envelope) -> tuple[str, dict[str, str]]:
        headers = envelope.to_headers()
        headers[H_MSG_ID] = envelope.id
        return self.names(envelope.channel).event_subject(envelope.key), headers

    async def publish(self, envelope: Envelope) -> None:
        subject, headers = self._wire(envelope)
        try:
            await self.js.publish(subject, envelope.payload, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise PublishError(envelope.id, f"{type(exc).__name__}: {exc}") from exc

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        # Pipelined: up to the client's window (4000) of unconfirmed publishes in flight instead of
        # one round trip each; measured 4-6x the throughput of sequential publish on loopback.
        futures: list[asyncio.Future[Any]] = []
        try:
            for envelope in envelopes:
                subject, headers = self._wire(envelope)
                futures.append(await self.js.publish_async(subject, envelope.payload, headers=headers))
        except (nats.errors.Error, OSError) as exc:
            for fut in futures:
                fut.cancel()
            raise PublishError(envelopes[len(futures)].id, f"{type(exc).__name__}: {exc}") from exc
        if not futures:
            return
        _, pending = await asyncio.wait(futures, timeout=self.publish_timeout)
        failure: tuple[str, str] | None = None
        for envelope, fut in zip(envelopes, futures, strict=True):
            if fut in pending:
                fut.cancel()
                failure = failure or (envelope.id, f"no confirmation within {self.publish_timeout} s")
            elif (error := fut.exception()) is not None:
                failure = failure or (envelope.id, f"{type(error).__name__}: {error}")
        if failure is not None:
            raise PublishError(*failure)

    # -- consuming -------------------------------------------------------------------------------

    async def subscribe(
        self, channel: ChannelConfig, group: str, handler: BatchHandler, *, batch_size: int = 100
    ) -> _NatsSubscription:
        await self.declare_group(channel, group)
        names = self.names(channel.name)
        psub = await self.js.pull_subscribe_bind(durable=group, stream=names.stream)
        sub = _NatsSubscription(psub, names, channel.name, group, handler, batch_size)
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
                except TimeoutError:  # nats-py's or asyncio's: the stream has nothing more for us
                    return
                for msg in msgs:
                    yield Envelope.from_headers(channel.name, msg.headers or {}, msg.data)
                if msgs[-1].metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()


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
