"""What WebSocket and SSE connections share: the route's channel settings, and one client's
subscriptions and bounded outgoing queue.

Subscribing is synchronous — authorise, attach to the hub, take the replay — so no message can
slip between the replay and the live stream (the event loop runs nothing else meanwhile), and
the client sees each message once, in publish order.

A client that does not read fast enough is not waited for: live messages queue up to
``queue_size``; one more and the session is *overflowed* — the queue is dropped and the
transport ends the connection with its error (WebSocket close 1008, SSE ``error`` event). No
writer ever waits on a client's socket without also watching the session end, so a client that
has stopped reading is cut off within ``close_timeout`` of its overflow.
Protocol replies and replayed messages go to a second queue that is sent first and not counted:
a replay is bounded by the hub's log (and shares its message objects), and counting it would
overflow a client that merely asked to catch up.

A session whose identity carries an ``exp`` claim ends when the token expires (WebSocket close
1008 "token expired", SSE ``error`` event with status 401), and one whose token is revoked (its
``jti`` reaches the gateway's deny-list, by the bus or the feed) ends then (1008 "token revoked",
401): a long-lived connection must not outlive the credentials that opened it. The client
reconnects with a fresh token.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from dataclasses import dataclass

from edgeway.gateway.actions.push.authorise import TopicRule, compile_rules, find_rule
from edgeway.gateway.actions.push.config import PushAction
from edgeway.gateway.actions.push.hub import PushHub
from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.meters import TransportMeter
from edgeway.gateway.actions.push.topics import MAX_TOPIC_LENGTH, valid_topic
from edgeway.gateway.core.pipeline import Identity


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a subscription is refused, as the problem's status, title and detail."""

    status: int
    title: str
    detail: str


@dataclass(frozen=True, slots=True)
class Channel:
    """A push route, compiled: its topic rules, limits and timers, and the gateway's hub."""

    route_id: str
    hub: PushHub
    rules: tuple[TopicRule, ...]
    transports: frozenset[str]
    allowed_origins: frozenset[str] | None
    queue_size: int
    max_subscriptions: int
    max_frame_bytes: int
    ping_interval: float
    ping_timeout: float
    idle_timeout: float | None
    heartbeat: float
    retry_ms: int
    close_timeout: float

    @classmethod
    def build(cls, route_id: str, action: PushAction, hub: PushHub) -> Channel:
        return cls(
            route_id=route_id,
            hub=hub,
            rules=compile_rules(action.topics),
            transports=frozenset(action.transports),
            allowed_origins=frozenset(action.allowed_origins) if action.allowed_origins is not None else None,
            queue_size=action.queue_size,
            max_subscriptions=action.max_subscriptions,
            max_frame_bytes=int(action.max_frame_bytes),
            ping_interval=float(action.ping_interval),
            ping_timeout=float(action.ping_timeout),
            idle_timeout=None if action.idle_timeout is None else float(action.idle_timeout),
            heartbeat=float(action.heartbeat),
            retry_ms=int(action.retry * 1000),
            close_timeout=float(action.close_timeout),
        )


class Ending(enum.Enum):
    """Why a session ends (each transport maps it to its close code or event)."""

    CLIENT = "client closed"
    OVERFLOW = "slow consumer: too many messages queued"
    IDLE = "idle timeout"
    PING_TIMEOUT = "ping timeout"
    SHUTDOWN = "server shutting down"
    PROTOCOL = "protocol error"
    TOO_BIG = "message too big"
    UNSUPPORTED = "binary messages are not supported"
    EXPIRED = "token expired"
    REVOKED = "token revoked"


class Session:
    """One client: identity, subscriptions, outgoing queue (messages and protocol replies)."""

    def __init__(self, channel: Channel, identity: Identity | None, transport: str) -> None:
        self.channel = channel
        self.meter: TransportMeter = channel.hub.meters.of(transport)
        self.identity = identity
        self.subscriptions: dict[str, TopicRule] = {}
        self.queue: deque[PushMessage] = deque()  # live messages, bounded by queue_size
        self.urgent: deque[PushMessage | bytes] = deque()  # replies and replays, sent first
        self.expires_at = _expiry(identity)  # wall-clock time, or None
        jti = identity.claims.get("jti") if identity is not None else None
        self.jti = jti if isinstance(jti, str) else None  # its revocation ends the session
        self.ending: Ending | None = None
        self.wakeup = asyncio.Event()
        self.ended = asyncio.Event()  # set by end(): a writer waiting on a stalled client stops
        self.sent = 0  # messages written to the client
        self._counted = 0  # of them, added to the sent counter
        self._open = True  # counted in the connections gauge
        channel.hub.opened(self, self.jti)
        self.meter.connections.inc()

    def active(self) -> bool:
        """Not ended (a call, so type checkers do not assume it unchanged across an await)."""
        return self.ending is None

    # -- subscriptions ---------------------------------------------------------------------------
    def check(self, topic: str) -> tuple[TopicRule, dict[str, str]] | Refusal:
        """The rule that lets this client subscribe to ``topic``, or why not."""
        if not valid_topic(topic):
            return Refusal(
                400,
                "Bad Request",
                f"invalid topic {topic[:MAX_TOPIC_LENGTH]!r}: use '/'-separated segments of letters, "
                "digits, '_', '-', '.', ':'",
            )
        found = find_rule(self.channel.rules, topic)
        if found is None:
            return Refusal(403, "Forbidden", f"no topic rule of this channel allows {topic!r}")
        rule, params = found
        if self.identity is None and rule.needs_identity:
            return Refusal(401, "Unauthorized", f"topic {topic!r} needs an authenticated caller")
        if not rule.authoriser.may_subscribe(self.identity, topic, params):
            return Refusal(403, "Forbidden", f"not allowed to subscribe to {topic!r}")
        return rule, params

    def subscribe(self, topic: str, rule: TopicRule, after_seq: int | None, replay: bool) -> None:
        """Attach to the hub; queue the replay (messages after ``after_seq``, or all kept ones)."""
        if topic in self.subscriptions or self.ending is not None:
            return
        self.subscriptions[topic] = rule
        self.channel.hub.attach(topic, self)
        if replay or after_seq is not None:
            for message in self.channel.hub.replay(topic, after_seq):
                if self._may_receive(rule, message):
                    self.urgent.append(message)
            self.wakeup.set()

    def limit_reached(self) -> Refusal | None:
        if len(self.subscriptions) >= self.channel.max_subscriptions:
            return Refusal(
                429,
                "Too Many Subscriptions",
                f"at most {self.channel.max_subscriptions} topics per connection",
            )
        return None

    def unsubscribe(self, topic: str) -> bool:
        if self.subscriptions.pop(topic, None) is None:
            return False
        self.channel.hub.detach(topic, self)
        if any(m.topic == topic for m in self.queue):
            # nothing of a topic arrives after the client was told it is unsubscribed
            self.queue = deque(m for m in self.queue if m.topic != topic)
        return True

    def resume_point(self, topics: list[str], last_event_id: str | None) -> int | None:
        """The hub sequence to resume after, from a client's ``Last-Event-ID``.

        An id the hub no longer keeps (too old, or seen on another gateway instance) resumes
        from everything kept: the client may see a message twice (ids let it tell), never miss
        one that is still kept.
        """
        if not last_event_id:
            return None
        seq = self.channel.hub.seq_of(topics, last_event_id)
        return 0 if seq is None else seq

    # -- queue -------------------------------------------------------------------------------------
    def deliver(self, message: PushMessage) -> bool:
        """Called by the hub for every message on a subscribed topic; True when queued."""
        rule = self.subscriptions.get(message.topic)
        if rule is None or self.ending is not None or not self._may_receive(rule, message):
            return False
        if len(self.queue) >= self.channel.queue_size:
            self.meter.overflows.inc()
            self.meter.discarded.inc()  # this one; end() counts the queued ones
            self.end(Ending.OVERFLOW)
            return False
        self.queue.append(message)
        self.wakeup.set()
        return True

    def _may_receive(self, rule: TopicRule, message: PushMessage) -> bool:
        return not rule.checks_messages or rule.authoriser.may_receive(self.identity, message)

    def reply(self, frame: bytes) -> None:
        """Queue a protocol reply (sent before live messages, not counted against ``queue_size``)."""
        if self.ending is None:
            self.urgent.append(frame)
            self.wakeup.set()

    def pending(self) -> bool:
        return bool(self.urgent or self.queue)

    def take(self) -> PushMessage | bytes | None:
        if self.urgent:
            item = self.urgent.popleft()
        elif self.queue:
            item = self.queue.popleft()
        else:
            if self.sent != self._counted:
                # The writer takes until nothing is left, then writes: one counter increment per
                # wake-up (a lock in prometheus_client), not one per message.
                self.meter.sent.inc(self.sent - self._counted)
                self._counted = self.sent
            return None
        if isinstance(item, PushMessage):
            self.sent += 1
        return item

    def end(self, why: Ending) -> None:
        """Stop taking messages; the transport's loop sees ``ending`` and closes its way."""
        if self.ending is not None:
            return
        self.ending = why
        self.meter.ended(why.name.lower())
        if why is not Ending.SHUTDOWN:
            lost = len(self.queue) + sum(isinstance(item, PushMessage) for item in self.urgent)
            if lost:
                self.meter.discarded.inc(lost)
            self.queue.clear()  # an overflowed or failed client gets no more of them
            self.urgent.clear()
        self.detach()
        self.wakeup.set()
        self.ended.set()

    def shutdown(self) -> None:
        self.end(Ending.SHUTDOWN)

    def revoked(self) -> None:
        self.end(Ending.REVOKED)

    def seconds_left(self) -> float | None:
        """Until the caller's token expires (None: no expiry)."""
        return None if self.expires_at is None else self.expires_at - time.time()

    def detach(self) -> None:
        for topic in self.subscriptions:
            self.channel.hub.detach(topic, self)
        self.subscriptions.clear()
        self.channel.hub.closed(self, self.jti)
        if self._open:  # detach runs more than once (end, then the transport's finally)
            self._open = False
            self.meter.connections.dec()

    def cut_off(self) -> None:
        """The client did not take its last frame within ``close_timeout``: it is cut."""
        self.meter.send_timeouts.inc()


def _expiry(identity: Identity | None) -> float | None:
    if identity is None:
        return None
    exp = identity.claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)
