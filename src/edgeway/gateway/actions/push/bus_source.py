"""Push messages from the event bus: services publish events with :mod:`edgeway.bus`, and every
gateway process turns the ones on its configured channels into messages on topics.

Push needs every gateway process to see every event (a client is connected to one of them), and
nothing kept for a process that is gone. So this source does not join a consumer group (members
of a group compete for events, and a durable group outlives the process); it follows the
channel the way a broadcast listener does, using the bus's own naming:

* NATS: a plain subscription to the channel's event subjects (``<prefix>.<channel>.e.>``).
  JetStream publishes are ordinary NATS messages on those subjects, so the subscription sees
  them as they are stored, without a consumer on the stream;
* RabbitMQ: a server-named, exclusive, auto-delete queue bound to the channel's topic exchange
  (``<prefix>.<channel>``, routing keys ``e.#``); RabbitMQ deletes it when the gateway goes.

Either way a gateway sees the events published while it runs (the per-topic replay log covers
short client reconnects); events published while it was down are not pushed later, which is what
a live notification wants. The event's id becomes the message id (the same on every gateway,
so ``Last-Event-ID`` works across instances), its type the event name, its JSON the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from edgeway.bus.codecs import payload_value
from edgeway.bus.errors import EventDecodeError
from edgeway.bus.events import Envelope
from edgeway.bus.nats_liveness import LIVENESS, reconnect_forever
from edgeway.bus.urls import safe_url
from edgeway.extras import MissingExtraError
from edgeway.gateway.actions.push.config import PushBusSource
from edgeway.gateway.actions.push.sources import PushSink
from edgeway.gateway.actions.push.topics import TopicTemplate, parse_topic_template
from edgeway.gateway.core.errors import GatewayError

log = logging.getLogger("edgeway.gateway.actions.push")

_Mapping = tuple[frozenset[str] | None, TopicTemplate]


class BusSource:
    def __init__(self, config: PushBusSource) -> None:
        self.config = config
        self.mappings: dict[str, list[_Mapping]] = {}
        for mapping in config.channels:
            types = frozenset(mapping.types) if mapping.types is not None else None
            self.mappings.setdefault(mapping.channel, []).append((types, parse_topic_template(mapping.topic)))
        self.received = 0
        self._sink: PushSink | None = None
        self._nats: Any = None
        self._rabbit: Any = None

    async def start(self, sink: PushSink) -> None:
        self._sink = sink
        if self.config.transport == "nats":
            await self._start_nats()
        else:
            await self._start_rabbit()

    async def stop(self) -> None:
        if self._nats is not None:
            import nats.errors

            with contextlib.suppress(nats.errors.Error):
                await self._nats.drain()
            self._nats = None
        if self._rabbit is not None:
            await self._rabbit.close()
            self._rabbit = None
        self._sink = None

    # -- brokers -----------------------------------------------------------------------------------
    # Each broker's client is imported when that broker is used: a gateway installed with one
    # extra (edgeway[nats] or edgeway[rabbitmq]) has only that client; the config check names
    # the extra when it is missing (edgeway.gateway.config.extras).
    async def _start_nats(self) -> None:
        import nats
        import nats.errors

        from edgeway.bus.nats import envelope_from
        from edgeway.bus.nats.transport import NatsTransport

        # The transport object only names things here (the subject layout stays defined once) and
        # parses the URL setting, a cluster's servers comma-separated among them.
        names = NatsTransport(self.config.url, prefix=self.config.prefix)
        broker = safe_url(self.config.url)

        async def on_error(exc: Exception) -> None:
            log.warning("push: NATS at %s: %s: %s", broker, type(exc).__name__, exc)

        try:
            # nats-py retries forever (it must, to ride out broker restarts later): bound the
            # first connection so a gateway pointed at a dead broker says so instead of hanging.
            async with asyncio.timeout(self.config.connect_timeout):
                self._nats = await nats.connect(
                    servers=names.servers,
                    name="edgeway-gateway-push",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=on_error,
                    **LIVENESS,
                )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise GatewayError(
                f"push: cannot connect to NATS at {broker} within "
                f"{self.config.connect_timeout:g}s: {type(exc).__name__} {exc}".rstrip()
            ) from exc
        reconnect_forever(self._nats, 0.5)
        for channel in self.mappings:

            async def on_message(msg: Any, channel: str = channel) -> None:
                self._on_envelope(envelope_from(channel, msg.headers, msg.data, subject=msg.subject))

            await self._nats.subscribe(f"{names.names(channel).events}.>", cb=on_message)
        await self._nats.flush()  # the subscriptions are registered before start() returns

    async def _start_rabbit(self) -> None:
        import aio_pika

        from edgeway.bus.rabbit.transport import RabbitTransport

        names = RabbitTransport(self.config.url, prefix=self.config.prefix)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                self._rabbit = await aio_pika.connect_robust(self.config.url)
            amqp = await self._rabbit.channel()
            for channel in self.mappings:
                exchange = await amqp.declare_exchange(
                    names.names(channel).exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await amqp.declare_queue(exclusive=True, auto_delete=True)
                await queue.bind(exchange, "e.#")

                async def on_message(message: Any, channel: str = channel) -> None:
                    self._on_envelope(Envelope.from_headers(channel, message.headers or {}, message.body))

                await queue.consume(on_message, no_ack=True)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPException) as exc:
            raise GatewayError(f"push: cannot follow RabbitMQ at {safe_url(self.config.url)}: {exc}") from exc

    # -- events to messages ------------------------------------------------------------------------
    def _on_envelope(self, envelope: Envelope) -> None:
        sink = self._sink
        if sink is None:
            return
        self.received += 1
        payload: Any = None
        for types, template in self.mappings.get(envelope.channel, ()):
            if types is not None and envelope.type not in types:
                continue
            if payload is None:
                try:
                    payload = payload_value(envelope)  # JSON or msgpack
                except (EventDecodeError, MissingExtraError) as exc:
                    log.warning("push: event %s on %s skipped: %s", envelope.id, envelope.channel, exc)
                    return
            topic = template.render(payload)
            if topic is None:
                log.debug("push: event %s has no %s topic; skipped", envelope.id, template.text)
                continue
            # the decoded payload, not the bytes: the hub then encodes once instead of parsing again
            sink.publish(topic, payload, event=envelope.type or "message", id=envelope.id)
