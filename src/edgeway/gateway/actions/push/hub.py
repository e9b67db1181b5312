"""The push hub: topics, their subscribers, and a short replay log per topic.

Every push route of a gateway shares one hub (``env.shared("push", ...)``); sources publish into
it (:meth:`PushHub.publish`) and it hands each message to the subscribers of its topic at once —
it never waits for a client: each client has a bounded queue of its own (see :mod:`.session`).

The replay log keeps the last ``replay_messages`` messages of each topic, for ``replay_ttl``
seconds, within ``replay_bytes`` overall (least recently published topics go first). It serves
two needs: a client that reconnects with ``Last-Event-ID`` gets what it missed, and a client that
subscribes just after an action started (the 202 of "send 10 emails") can ask for what was
already published on its topic. Messages on topics nobody is subscribed to are logged too, for
that second case.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from edgeway.bus.events import new_event_id
from edgeway.gateway.actions.push.config import PushSettings
from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.meters import PushMeters
from edgeway.gateway.actions.push.sources import PushSource, load_source
from edgeway.gateway.actions.push.topics import valid_topic
from edgeway.observability.metrics import Metrics

if TYPE_CHECKING:
    from edgeway.security.revocation import RevocationList

log = logging.getLogger("edgeway.gateway.actions.push")

# Ids and event names travel in SSE fields and JSON: keep them to characters that need no escaping.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class Subscriber(Protocol):
    def deliver(self, message: PushMessage) -> bool: ...

    def shutdown(self) -> None: ...

    def revoked(self) -> None: ...


class _TopicLog:
    __slots__ = ("bytes", "messages")

    def __init__(self, limit: int) -> None:
        self.messages: deque[PushMessage] = deque(maxlen=limit)
        self.bytes = 0


class PushHub:
    def __init__(self, settings: PushSettings, metrics: Metrics, sources: Iterable[PushSource] = ()) -> None:
        self.settings = settings
        self.replay_messages = settings.replay_messages
        self.replay_bytes = int(settings.replay_bytes)
        self.replay_ttl = float(settings.replay_ttl)
        self.max_message_bytes = int(settings.max_message_bytes)
        self.sources: list[PushSource] = list(sources)
        if settings.bus is not None:
            # the broker clients (nats-py, aio-pika: ~0.3 s of start) only for gateways that use them
            from edgeway.gateway.actions.push.bus_source import BusSource

            self.sources.append(BusSource(settings.bus))
        self.sources.extend(load_source(path) for path in settings.sources)
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._sessions: set[Subscriber] = set()
        self._by_jti: dict[str, set[Subscriber]] = {}  # sessions opened with that token
        self._following: set[int] = set()  # ids of the deny-lists this hub watches
        self._logs: OrderedDict[str, _TopicLog] = OrderedDict()
        self._logged_bytes = 0
        self._seq = 0
        self.published = metrics.counter(
            "edgeway_gateway_push_published_total", "Messages accepted by the push hub from its sources."
        )
        self.dropped = metrics.counter(
            "edgeway_gateway_push_dropped_total",
            "Messages the hub refused (invalid topic, too large, not JSON), by reason.",
            ("reason",),
        )
        self.delivered = metrics.counter(
            "edgeway_gateway_push_delivered_total", "Messages queued for a client (one per client)."
        )
        self.meters = PushMeters(metrics)  # per transport: connections, sent, overflows...
        metrics.gauge(
            "edgeway_gateway_push_topics",
            "Topics with subscribers.",
            function=lambda: float(len(self._subscribers)),
        )

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        started: list[PushSource] = []
        try:
            for source in self.sources:
                await source.start(self)
                started.append(source)
        except BaseException:
            for source in reversed(started):
                await source.stop()
            raise

    async def stop(self) -> None:
        for source in reversed(self.sources):
            await source.stop()
        for session in list(self._sessions):
            session.shutdown()

    # -- publishing ------------------------------------------------------------------------------
    def publish(
        self, topic: str, data: Any, *, event: str = "message", id: str | None = None
    ) -> PushMessage | None:
        """Queue ``data`` for every subscriber of ``topic`` and keep it for replay.

        ``data`` is JSON text as bytes (kept as it is) or a value to encode as JSON. Returns the
        message, or None when it was dropped (invalid topic or event name, not JSON, too large).
        """
        if not valid_topic(topic):
            return self._drop("topic", topic)
        if _NAME.fullmatch(event) is None:
            return self._drop("event", topic)
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return self._drop("not-json", topic)
        else:
            try:
                raw = orjson.dumps(data)
            except TypeError:
                return self._drop("not-json", topic)
            payload = data
        if len(raw) > self.max_message_bytes:
            return self._drop("too-large", topic)
        if id is None or _NAME.fullmatch(id) is None:
            id = new_event_id()
        message = PushMessage(id, topic, event, raw, time.time(), payload)
        self._seq += 1
        message.seq = self._seq
        self.published.inc()
        self._remember(message)
        subscribers = self._subscribers.get(topic)
        if subscribers:
            queued = 0
            for subscriber in list(subscribers):
                queued += subscriber.deliver(message)
            if queued:
                self.delivered.inc(queued)
        return message

    def _drop(self, reason: str, topic: str) -> PushMessage | None:
        self.dropped.labels(reason).inc()
        log.warning("push: dropped a message for topic %r (%s)", topic[:200], reason)
        return None

    def _remember(self, message: PushMessage) -> None:
        if self.replay_messages == 0 or self.replay_bytes == 0:
            return
        topic_log = self._logs.get(message.topic)
        if topic_log is None:
            topic_log = self._logs[message.topic] = _TopicLog(self.replay_messages)
        else:
            self._logs.move_to_end(message.topic)
        if len(topic_log.messages) == self.replay_messages:
            gone = topic_log.messages[0]
            topic_log.bytes -= len(gone.data)
            self._logged_bytes -= len(gone.data)
        topic_log.messages.append(message)
        topic_log.bytes += len(message.data)
        self._logged_bytes += len(message.data)
        while self._logged_bytes > self.replay_bytes and self._logs:
            _, oldest = self._logs.popitem(last=False)
            self._logged_bytes -= oldest.bytes

    def replay(self, topic: str, after_seq: int | None) -> list[PushMessage]:
        """Kept messages of ``topic`` newer than ``after_seq`` (all kept ones when None)."""
        topic_log = self._logs.get(topic)
        if topic_log is None:
            return []
        oldest = time.time() - self.replay_ttl
        start = 0 if after_seq is None else after_seq
        return [m for m in topic_log.messages if m.seq > start and m.time >= oldest]

    def seq_of(self, topics: Iterable[str], message_id: str) -> int | None:
        """The hub sequence of the kept message ``message_id`` on one of ``topics``."""
        for topic in topics:
            topic_log = self._logs.get(topic)
            if topic_log is not None:
                for message in topic_log.messages:
                    if message.id == message_id:
                        return message.seq
        return None

    # -- subscribers -----------------------------------------------------------------------------
    def opened(self, session: Subscriber, jti: str | None = None) -> None:
        self._sessions.add(session)
        if jti is not None:
            self._by_jti.setdefault(jti, set()).add(session)

    def closed(self, session: Subscriber, jti: str | None = None) -> None:
        self._sessions.discard(session)
        if jti is not None:
            _discard(self._by_jti, jti, session)

    def follow(self, revocations: RevocationList) -> None:
        """End the sessions of every token ``revocations`` learns of from now on (once per list)."""
        if id(revocations) not in self._following:
            self._following.add(id(revocations))
            revocations.watch(self._revoked)

    def _revoked(self, jti: str) -> None:
        for session in list(self._by_jti.get(jti, ())):
            session.revoked()

    def attach(self, topic: str, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(topic, set()).add(subscriber)

    def detach(self, topic: str, subscriber: Subscriber) -> None:
        _discard(self._subscribers, topic, subscriber)

    def subscribers(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))


def _discard(index: dict[str, set[Subscriber]], key: str, subscriber: Subscriber) -> None:
    """Take ``subscriber`` out of ``index[key]``, and the key with its last subscriber."""
    subscribers = index.get(key)
    if subscribers is not None:
        subscribers.discard(subscriber)
        if not subscribers:
            del index[key]
