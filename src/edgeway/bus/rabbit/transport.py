"""The RabbitMQ transport.

Layout on the broker, for channel ``orders`` and prefix ``ew``:

* topic exchange ``ew.orders``; events are published with routing key ``e.<key>`` and
  publisher confirms;
* one durable quorum queue per group, ``ew.orders.<group>``, bound with ``e.#``: members of a
  group compete on it, each group gets every event. ``x-message-ttl`` is the broker-side TTL.
  A broadcast member gets an exclusive, auto-deleted classic queue of its own instead,
  ``ew.orders.<group>.<random>``, gone with its connection;
  With ``on_expiry=dead_letter`` the queue also names the channel's DLX, so RabbitMQ itself moves
  messages that outlive their retention to the dead letters;
* delayed retries without the delayed-message plugin: a failed message is re-published to
  ``ew.orders.<group>.retry.<ms>``, a queue whose ``x-message-ttl`` is that delay and whose
  dead-letter target is the group queue. One queue per distinct delay keeps them FIFO, which
  RabbitMQ needs (it only expires messages at the head of a queue);
* topic exchange ``ew.orders.dlx`` and queue ``ew.orders.dlq`` for dead letters; the bus publishes
  there with the reason in headers;
* stream ``ew.orders.history`` (a RabbitMQ stream queue bound to the exchange) when ``history`` is
  on, so read copies can be rebuilt from the beginning as on NATS.

RabbitMQ has no publish-side de-duplication: consumers de-duplicate with the inbox. A group only
receives events published after its queue was first declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from edgeway.bus.brokers import safe_url
from edgeway.bus.codecs import JSON, canonical
from edgeway.bus.errors import DeadLetterNotFoundError, PublishError, TransportError
from edgeway.bus.events import H_ATTEMPT, H_CONTENT_TYPE, Envelope, new_event_id
from edgeway.bus.rabbit.delivery import RabbitDelivery
from edgeway.bus.transport import BatchHandler, ChannelConfig, DeadLetter, Delivery, check_group
from edgeway.tasks import cancel_and_wait

H_REASON = "ew-dead-reason"
H_GROUP = "ew-dead-group"
H_DEAD_AT = "ew-dead-at"
_DLQ_ONLY = frozenset({H_REASON, H_GROUP, H_DEAD_AT, "x-death", "x-delivery-count", "x-first-death-exchange",
                       "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                       "x-last-death-queue", "x-last-death-reason"})  # fmt: skip
_KEY_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AMQP_ERRORS = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,
    ConnectionError,
)


class _Names:
    __slots__ = ("dlq", "dlx", "exchange", "history")

    def __init__(self, prefix: str, channel: str) -> None:
        self.exchange = f"{prefix}.{channel}"
        self.dlx = f"{prefix}.{channel}.dlx"
        self.dlq = f"{prefix}.{channel}.dlq"
        self.history = f"{prefix}.{channel}.history"

    def queue(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def retry_queue(self, group: str, delay_ms: int) -> str:
        return f"{self.exchange}.{group}.retry.{delay_ms}"


def _routing_key(key: str | None) -> str:
    if key is None:
        return "e._"
    return f"e.{key}" if _KEY_TOKEN.fullmatch(key) else "e.h"


def _amqp_headers(envelope: Envelope) -> dict[str, Any]:
    return dict(envelope.to_headers())


class _RabbitSubscription:
    def __init__(
        self,
        transport: RabbitTransport,
        channel: aio_pika.abc.AbstractChannel,
        queue: aio_pika.abc.AbstractQueue,
        config: ChannelConfig,
        group: str,
        handler: BatchHandler,
        batch_size: int,
        private: bool,
    ) -> None:
        self._transport = transport
        self._channel = channel
        self._queue = queue
        self._config = config
        self._group = group
        self._private = private
        self._handler = handler
        self._batch_size = batch_size
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self._held: list[RabbitDelivery] = []
        self._tag: str | None = None
        self._task = asyncio.create_task(self._run(), name=f"rabbit-consumer-{queue.name}")

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._inbox.put)

    async def _run(self) -> None:
        while True:
            messages = [await self._inbox.get()]
            # Take what is already buffered (the prefetch window) to form a batch, without waiting.
            while len(messages) < self._batch_size and not self._inbox.empty():
                messages.append(self._inbox.get_nowait())
            batch = [self._delivery(m) for m in messages]
            self._held = batch
            await self._handler(batch)
            self._held = []

    def _delivery(self, message: aio_pika.abc.AbstractIncomingMessage) -> RabbitDelivery:
        headers = message.headers or {}
        base = _int(headers.get(H_ATTEMPT), 0)
        # Quorum queues count redeliveries (consumer died before acking) in x-delivery-count.
        redelivered = _int(headers.get("x-delivery-count"), 1 if message.redelivered else 0)
        envelope = Envelope.from_headers(
            self._config.name,
            _with_content_type({k: v for k, v in headers.items() if k != "x-delivery-count"}, message),
            message.body,
            attempt=base + redelivered + 1,
        )
        return RabbitDelivery(message, envelope, self._retry)

    async def _retry(self, delivery: RabbitDelivery, delay: float) -> None:
        queue = self._queue.name if self._private else None
        await self._transport.retry_later(self._config, self._group, delivery.envelope, delay, queue=queue)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        with contextlib.suppress(*_AMQP_ERRORS):
            if self._tag is not None:
                await self._queue.cancel(self._tag)
            for delivery in self._held:
                await delivery.requeue()
            while not self._inbox.empty():
                await self._inbox.get_nowait().nack(requeue=True)
            await self._channel.close()


def _with_content_type(
    headers: dict[str, Any], message: aio_pika.abc.AbstractIncomingMessage
) -> dict[str, Any]:
    """``headers`` with the message's AMQP content type when they name none (a message an AMQP
    client published with its property only); edgeway's own carry both."""
    content_type = message.content_type
    if content_type and H_CONTENT_TYPE not in headers and canonical(content_type) != JSON:
        headers[H_CONTENT_TYPE] = content_type
    return headers


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class RabbitTransport:
    """:class:`~edgeway.bus.transport.Transport` over RabbitMQ (AMQP 0-9-1). See the module docstring."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        prefix: str = "ew",
        queue_type: str = "quorum",
        history: bool = True,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", prefix):
            raise TransportError(
                f"invalid RabbitMQ prefix {prefix!r}: use 1-16 lower-case letters and digits"
            )
        if queue_type not in ("quorum", "classic"):
            raise TransportError(f"queue_type must be 'quorum' or 'classic', not {queue_type!r}")
        self.url = url
        self.prefix = prefix
        self.queue_type = queue_type
        self.history_enabled = history
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._retry_queues: set[str] = set()
        self._subscriptions: list[_RabbitSubscription] = []
        # Everything this object declared, so tests and dev resets can delete exactly that.
        self.declared_queues: set[str] = set()
        self.declared_exchanges: set[str] = set()

    # -- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        # A robust connection is not "closed" while it reconnects; its event says whether it is up.
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def connect(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            return
        try:
            self._connection = await aio_pika.connect_robust(self.url)
            self._publish_channel = await self._connection.channel(publisher_confirms=True)
        except _AMQP_ERRORS as exc:
            raise TransportError(f"cannot connect to RabbitMQ at {safe_url(self.url)}: {exc}") from exc
        self._exchanges.clear()

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        if self._connection is not None:
            with contextlib.suppress(*_AMQP_ERRORS):
                await self._connection.close()
        self._connection = None
        self._publish_channel = None
        self._exchanges.clear()

    @property
    def channel(self) -> aio_pika.abc.AbstractChannel:
        if self._publish_channel is None:
            raise TransportError("the RabbitMQ transport is not connected; call connect() (or start the bus)")
        return self._publish_channel

    def names(self, channel: str) -> _Names:
        return _Names(self.prefix, channel)

    # -- declarations ----------------------------------------------------------------------------

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            self._exchanges[name] = exchange
            self.declared_exchanges.add(name)
        return exchange

    async def declare(self, channel: ChannelConfig) -> None:
        names = self.names(channel.name)
        try:
            exchange = await self._exchange(names.exchange)
            dlx = await self._exchange(names.dlx)
            dlq = await self.channel.declare_queue(
                names.dlq, durable=True, arguments={"x-queue-type": "classic"}
            )
            self.declared_queues.add(names.dlq)
            await dlq.bind(dlx, "#")
            if self.history_enabled:
                args: dict[str, Any] = {"x-queue-type": "stream"}
                if channel.broker_max_age is not None:
                    args["x-max-age"] = f"{max(1, int(channel.broker_max_age))}s"
                history = await self.channel.declare_queue(names.history, durable=True, arguments=args)
                self.declared_queues.add(names.history)
                await history.bind(exchange, "e.#")
        except _AMQP_ERRORS as exc:
            raise TransportError(f"cannot declare channel {channel.name} on RabbitMQ: {exc}") from exc

    def _queue_arguments(self, channel: ChannelConfig, group: str) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        max_age = channel.broker_max_age
        if max_age is not None:
            args["x-message-ttl"] = int(max_age * 1000)
        if channel.ttl is not None and channel.on_expiry.value == "dead_letter":
            args["x-dead-letter-exchange"] = self.names(channel.name).dlx
            args["x-dead-letter-routing-key"] = group
        return args

    async def _group_queue(
        self, amqp: aio_pika.abc.AbstractChannel, channel: ChannelConfig, group: str
    ) -> aio_pika.abc.AbstractQueue:
        names = self.names(channel.name)
        queue = await amqp.declare_queue(
            names.queue(group), durable=True, arguments=self._queue_arguments(channel, group)
        )
        self.declared_queues.add(names.queue(group))
        await queue.bind(names.exchange, "e.#")
        return queue

    async def declare_group(self, channel: ChannelConfig, group: str) -> None:
        check_group(group)
        try:
            await self._exchange(self.names(channel.name).exchange)
            await self._group_queue(self.channel, channel, group)
        except _AMQP_ERRORS as exc:
            raise TransportError(f"cannot declare group {group} on channel {channel.name}: {exc}") from exc

    # -- publishing ------------------------------------------------------------------------------

    def _message(self, envelope: Envelope, headers: dict[str, Any] | None = None) -> aio_pika.Message:
        return aio_pika.Message(
            envelope.payload,
            headers=headers if headers is not None else _amqp_headers(envelope),
            message_id=envelope.id,
            content_type=envelope.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=int(envelope.time),
            type=envelope.type,
        )

    async def publish(self, envelope: Envelope) -> None:
        try:
            exchange = await self._exchange(self.names(envelope.channel).exchange)
            await exchange.publish(self._message(envelope), routing_key=_routing_key(envelope.key))
        except _AMQP_ERRORS as exc:
            raise PublishError(envelope.id, f"{type(exc).__name__}: {exc}") from exc

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        # Confirms are awaited together: the channel keeps many publishes in flight.
        results = await asyncio.gather(*(self.publish(e) for e in envelopes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def retry_later(
        self,
        channel: ChannelConfig,
        group: str,
        envelope: Envelope,
        delay: float,
        *,
        queue: str | None = None,
    ) -> None:
        """Deliver ``envelope`` to the group's queue, or ``queue`` (a broadcast member's), after ``delay``."""
        names = self.names(channel.name)
        delay_ms = max(1, int(delay * 1000))
        target = queue or names.queue(group)
        name = f"{target}.retry.{delay_ms}" if queue else names.retry_queue(group, delay_ms)
        arguments: dict[str, Any] = {
            "x-queue-type": "classic",
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
        }
        if queue:
            arguments["x-expires"] = delay_ms + 60_000  # a member's retry queue goes when unused
        try:
            if name not in self._retry_queues:
                await self.channel.declare_queue(name, durable=queue is None, arguments=arguments)
                self._retry_queues.add(name)
                if queue is None:
                    self.declared_queues.add(name)
            headers = _amqp_headers(envelope)
            headers[H_ATTEMPT] = envelope.attempt
            await self.channel.default_exchange.publish(self._message(envelope, headers), routing_key=name)
        except _AMQP_ERRORS as exc:
            raise PublishError(envelope.id, f"scheduling the retry failed: {exc}") from exc

    # -- consuming -------------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: ChannelConfig,
        group: str,
        handler: BatchHandler,
        *,
        batch_size: int = 100,
        broadcast: bool = False,
    ) -> _RabbitSubscription:
        check_group(group)
        if self._connection is None:
            raise TransportError("the RabbitMQ transport is not connected")
        names = self.names(channel.name)
        await self._exchange(names.exchange)
        amqp = await self._connection.channel()
        await amqp.set_qos(prefetch_count=batch_size * 2)
        queue: aio_pika.abc.AbstractQueue
        if broadcast:
            arguments = self._queue_arguments(channel, group)
            arguments["x-queue-type"] = "classic"  # quorum queues cannot be exclusive
            queue = await amqp.declare_queue(
                f"{names.queue(group)}.{new_event_id().lower()}",
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments=arguments,
            )
            await queue.bind(names.exchange, "e.#")
        else:
            queue = await self._group_queue(amqp, channel, group)
        sub = _RabbitSubscription(self, amqp, queue, channel, group, handler, batch_size, broadcast)
        await sub.start()
        self._subscriptions.append(sub)
        return sub

    # -- dead letters ----------------------------------------------------------------------------

    async def dead_letter(self, channel: ChannelConfig, group: str, delivery: Delivery, reason: str) -> None:
        envelope = delivery.envelope
        headers = _amqp_headers(envelope)
        headers[H_REASON] = reason[:4000]
        headers[H_GROUP] = group
        headers[H_DEAD_AT] = repr(time.time())
        headers[H_ATTEMPT] = envelope.attempt
        message = self._message(envelope, headers)
        message.message_id = new_event_id()  # the dead letter's own id
        try:
            dlx = await self._exchange(self.names(channel.name).dlx)
            await dlx.publish(message, routing_key=group)
        except _AMQP_ERRORS as exc:
            raise PublishError(envelope.id, f"dead-lettering failed: {exc}") from exc
        await delivery.term()

    async def _scan_dead_letters(
        self, channel: ChannelConfig, take: str | None
    ) -> tuple[list[DeadLetter], bool]:
        """Read the whole DLQ on a private channel; ack the one to ``take``; the rest go back."""
        if self._connection is None:
            raise TransportError("the RabbitMQ transport is not connected")
        amqp = await self._connection.channel()
        letters: list[DeadLetter] = []
        taken = False
        try:
            queue = await amqp.declare_queue(self.names(channel.name).dlq, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                letter = _dead_letter(channel.name, self.prefix, message)
                letters.append(letter)
                if take is not None and letter.id == take and not taken:
                    await message.ack()
                    taken = True
        except _AMQP_ERRORS as exc:
            raise TransportError(f"cannot read the dead letters of {channel.name}: {exc}") from exc
        finally:
            with contextlib.suppress(*_AMQP_ERRORS):
                await amqp.close()  # unacked messages return to the queue in their order
        return letters, taken

    async def dead_letters(self, channel: ChannelConfig) -> list[DeadLetter]:
        letters, _ = await self._scan_dead_letters(channel, None)
        return letters

    async def remove_dead_letter(self, channel: ChannelConfig, dead_letter_id: str) -> DeadLetter:
        letters, taken = await self._scan_dead_letters(channel, dead_letter_id)
        if not taken:
            raise DeadLetterNotFoundError(channel.name, dead_letter_id)
        return next(d for d in letters if d.id == dead_letter_id)

    async def redeliver(self, channel: ChannelConfig, group: str, envelope: Envelope) -> None:
        await self.declare_group(channel, group)
        try:
            await self.channel.default_exchange.publish(
                self._message(envelope), routing_key=self.names(channel.name).queue(group)
            )
        except _AMQP_ERRORS as exc:
            raise PublishError(envelope.id, f"replay failed: {exc}") from exc

    # -- history ---------------------------------------------------------------------------------

    async def history(self, channel: ChannelConfig) -> AsyncIterator[Envelope]:
        if not self.history_enabled:
            from edgeway.bus.errors import UnsupportedOperationError

            raise UnsupportedOperationError(
                "this RabbitMQ transport keeps no history (history=False); a rebuild needs it"
            )
        if self._connection is None:
            raise TransportError("the RabbitMQ transport is not connected")
        amqp = await self._connection.channel()
        try:
            await amqp.set_qos(prefetch_count=500)
            queue = await amqp.declare_queue(self.names(channel.name).history, passive=True)
            inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            tag = await queue.consume(inbox.put, arguments={"x-stream-offset": "first"})
            try:
                while True:
                    try:
                        # A stream has no "end" marker for a consumer: stop once it goes quiet.
                        message = await asyncio.wait_for(inbox.get(), timeout=1.0)
                    except TimeoutError:
                        return
                    await message.ack()
                    yield Envelope.from_headers(channel.name, message.headers or {}, message.body)
            finally:
                with contextlib.suppress(*_AMQP_ERRORS):
                    await queue.cancel(tag)
        finally:
            with contextlib.suppress(*_AMQP_ERRORS):
                await amqp.close()

    # -- housekeeping ----------------------------------------------------------------------------

    async def teardown(self) -> None:
        """Delete every queue and exchange this object declared (tests, development resets)."""
        connection = await aio_pika.connect(self.url)
        try:
            amqp = await connection.channel()
            for name in sorted(self.declared_queues):
                with contextlib.suppress(*_AMQP_ERRORS):
                    await amqp.queue_delete(name)
            for name in sorted(self.declared_exchanges):
                with contextlib.suppress(*_AMQP_ERRORS):
                    await amqp.exchange_delete(name)
        finally:
            await connection.close()


def _dead_letter(channel: str, prefix: str, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    group = str(headers.get(H_GROUP) or "")
    reason = str(headers.get(H_REASON) or "")
    dead_at = 0.0
    with contextlib.suppress(TypeError, ValueError):
        dead_at = float(str(headers.get(H_DEAD_AT)))
    dead_id = message.message_id or ""
    deaths = headers.get("x-death")
    if not reason and isinstance(deaths, list) and deaths:
        # Dead-lettered by RabbitMQ itself (x-message-ttl passed): the reason is in x-death.
        death = deaths[0]
        queue_name = str(death.get("queue", ""))
        group = queue_name.rsplit(".", 1)[-1]
        reason = f"{death.get('reason', 'expired')} in queue {queue_name} (broker ttl)"
        if dead_at == 0.0 and death.get("time") is not None:
            with contextlib.suppress(AttributeError):
                dead_at = death["time"].timestamp()
        dead_id = f"{dead_id}-{group}"
    attempt = _int(headers.get(H_ATTEMPT), 1)
    envelope = Envelope.from_headers(
        channel,
        {k: v for k, v in headers.items() if k not in _DLQ_ONLY and k != H_ATTEMPT},
        message.body,
        attempt,
    )
    return DeadLetter(dead_id, group, reason, dead_at, envelope)
