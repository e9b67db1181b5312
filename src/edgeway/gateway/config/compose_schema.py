"""Config of composition at the edge: aggregate endpoints, Python endpoints, push channels and
the response cache.

Owned by the composition work (issue 3); the fields grow here without touching ``schema.py``.
Each action model offers ``service_refs()`` (the services it calls, with their key paths) so the
top-level cross-checks can report unknown services for every action alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import HeaderName, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.topics import TopicPatternError, parse_topic_pattern, parse_topic_template
from edgeway.gateway.config.units import ByteSize, Duration


class AggregateAction(StrictModel):
    """Call several services (in parallel where independent) and answer with one response."""

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class EndpointAction(StrictModel):
    """Answer with a Python function registered by a module named in `python.modules`."""

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


_IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


def _parses_with(parse: Callable[[str], object], kind: str) -> AfterValidator:
    """A validator that runs ``parse`` and reports its TopicPatternError as ``kind``."""

    def check(value: str) -> str:
        try:
            parse(value)
        except TopicPatternError as exc:
            raise PydanticCustomError(kind, "{reason}", {"reason": str(exc)}) from exc
        return value

    return AfterValidator(check)


TopicPatternText = Annotated[str, _parses_with(parse_topic_pattern, "topic_pattern")]
TopicTemplateText = Annotated[str, _parses_with(parse_topic_template, "topic_template")]


class PushTopicRule(StrictModel):
    """Who may subscribe to the topics matching one pattern, and who receives which message."""

    pattern: TopicPatternText = Field(
        description="Topic pattern: `/`-separated literal segments and whole-segment parameters, "
        "e.g. `orders/{id}` or `users/{user}/notifications`."
    )
    allow: Literal["owner", "authenticated", "anyone", "roles", "custom"] = Field(
        description="`owner`: the caller owns the topic (see `owner_param` / `owner_field`); "
        "`authenticated`: any verified caller; `anyone`: no identity needed; `roles`: the caller "
        "has one of `roles`; `custom`: the Python `authoriser` decides."
    )
    owner_param: str | None = Field(
        None,
        description="With `allow: owner`: the pattern parameter that must equal the caller's "
        "`owner_claim` (checked when subscribing), e.g. `user` in `users/{user}/notifications`.",
    )
    owner_field: str | None = Field(
        None,
        description="With `allow: owner`: a dotted field of each message's JSON data that must "
        "equal the caller's `owner_claim`; messages without it are not delivered.",
    )
    owner_claim: str = Field(
        "sub",
        min_length=1,
        description="The identity claim the owner is compared with; `sub` is the subject.",
    )
    roles: list[str] = Field(default_factory=list, description="With `allow: roles`: any of these roles.")
    authoriser: str | None = Field(
        None,
        pattern=_IMPORT_PATH,
        description="With `allow: custom`: `module:attribute` of an object with `may_subscribe(identity, "
        "topic, params)` and `may_receive(identity, message)` (see docs/push.md).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PushTopicRule:
        problems: list[tuple[Loc, str]] = []
        params = parse_topic_pattern(self.pattern).params
        if self.allow == "owner":
            if self.owner_param is None and self.owner_field is None:
                problems.append((("allow",), "`allow: owner` needs owner_param or owner_field (or both)"))
            if self.owner_param is not None and self.owner_param not in params:
                known = ", ".join(params) or "none"
                problems.append(
                    (
                        ("owner_param",),
                        f"{self.owner_param!r} is not a parameter of {self.pattern!r} ({known})",
                    )
                )
        elif self.owner_param is not None or self.owner_field is not None:
            problems.append((("allow",), "owner_param / owner_field only apply with `allow: owner`"))
        if self.allow == "roles" and not self.roles:
            problems.append((("roles",), "`allow: roles` needs at least one role"))
        if (self.allow == "custom") != (self.authoriser is not None):
            problems.append((("authoriser",), "set `authoriser` exactly when `allow: custom`"))
        if problems:
            raise LocatedProblemsError(problems)
        return self


PushTransport = Literal["websocket", "sse"]
_BOTH_TRANSPORTS: tuple[PushTransport, ...] = ("websocket", "sse")


class PushAction(StrictModel):
    """A push channel: clients subscribe to topics over WebSocket (or Server-Sent Events)."""

    topics: list[PushTopicRule] = Field(
        min_length=1,
        description="Topic rules, first match wins; a topic no rule matches is refused.",
    )
    transports: list[PushTransport] = Field(
        default_factory=lambda: list(_BOTH_TRANSPORTS),
        min_length=1,
        description="`websocket` (upgrade on GET) and/or `sse` (a GET with `?topic=` answered as "
        "`text/event-stream`).",
    )
    allowed_origins: list[str] | None = Field(
        None,
        description="WebSocket: `Origin` values allowed to connect (e.g. `https://app.example.com`); "
        "others get 403. Set it when browsers authenticate with cookies (cross-site WebSocket "
        "hijacking); `null` allows any.",
    )
    queue_size: int = Field(
        256,
        gt=0,
        le=100_000,
        description="Messages waiting for one slow client; beyond it the client is disconnected "
        "(WebSocket close 1008, SSE `error` event).",
    )
    max_subscriptions: int = Field(64, gt=0, description="Topics one connection may subscribe to.")
    max_frame_bytes: ByteSize = Field(
        64 * 1024, gt=0, description="Largest message a client may send (WebSocket); close 1009 beyond."
    )
    ping_interval: Duration = Field(
        20.0, gt=0, description="WebSocket: a ping after this long without traffic from the client."
    )
    ping_timeout: Duration = Field(
        20.0, gt=0, description="WebSocket: close (1011) when the client answers no ping within this."
    )
    idle_timeout: Duration | None = Field(
        600.0,
        gt=0,
        description="Close a connection when neither side sent a message for this long (pings do not "
        "count); `null` never.",
    )
    heartbeat: Duration = Field(
        15.0,
        gt=0,
        description="SSE: a comment line after this long without an event, so proxies keep it open.",
    )
    retry: Duration = Field(3.0, gt=0, description="SSE: the reconnection delay suggested to the client.")
    close_timeout: Duration = Field(
        5.0, gt=0, description="WebSocket: time given to the client to answer a close frame."
    )

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class CacheRule(StrictModel):
    """Cache responses of this route for a time (GET and HEAD; see docs/cache.md)."""

    ttl: Duration = Field(
        gt=0,
        description="Freshness of a response whose headers give none (`max-age`, `s-maxage`, `Expires`).",
    )
    max_ttl: Duration | None = Field(
        None, gt=0, description="Upper bound on any freshness, including the origin's; `null` none."
    )
    vary: list[HeaderName] = Field(
        default_factory=list,
        description="Request headers whose values are part of the key (e.g. `Accept-Language`). A "
        "response whose `Vary` names a header not listed here is not stored.",
    )
    statuses: list[int] = Field(
        default_factory=lambda: [200, 203, 204, 300, 301, 404, 410],
        min_length=1,
        description="Response statuses that may be stored.",
    )
    shared: bool = Field(
        False,
        description="On an authenticated route, share entries between callers. Off: the caller's "
        "subject is part of the key, so users never see each other's responses.",
    )
    ignore_query: list[str] = Field(
        default_factory=list,
        description="Query parameters left out of the key (tracking parameters such as `utm_source`).",
    )
    max_entry_bytes: ByteSize = Field(
        1024 * 1024, gt=0, description="Larger response bodies are passed through and not stored."
    )
    client_directives: Literal["ignore", "honor"] = Field(
        "ignore",
        description="Request `Cache-Control`: `ignore` it (the cache protects the services, as CDNs "
        "do) or `honor` `no-cache`, `no-store`, `max-age`, `min-fresh` and `only-if-cached`.",
    )
    coalesce: bool = Field(True, description="Concurrent misses for one key make one upstream call.")
    coalesce_timeout: Duration = Field(
        5.0,
        gt=0,
        description="A request waiting for another's upstream call goes upstream itself after this.",
    )

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if status < 200 or status > 599 or status in (206, 304):
                raise PydanticCustomError(
                    "cache_status",
                    "status {status} cannot be cached here (use 200-599 except 206 and 304)",
                    {"status": status},
                )
        return value

    @field_validator("vary")
    @classmethod
    def _vary(cls, value: list[str]) -> list[str]:
        lowered = [name.lower() for name in value]
        for name in lowered:
            if lowered.count(name) > 1:
                raise PydanticCustomError("vary", "header '{name}' is listed twice", {"name": name})
        return value


class CacheRedis(StrictModel):
    """A Redis server holding cached responses for every gateway that points at it."""

    url: str = Field(
        "redis://127.0.0.1:6379/0", pattern=r"^rediss?://", description="`redis://` or `rediss://` URL."
    )
    key_prefix: str = Field(
        "edgeway:cache:", min_length=1, description="Prefix of every key; give each gateway group its own."
    )
    timeout: Duration = Field(
        0.25, gt=0, description="Per command; a slower Redis counts as a miss (the request goes upstream)."
    )
    retry_after: Duration = Field(
        2.0, gt=0, description="After a Redis error, this long without trying Redis (memory only)."
    )


class CacheStore(StrictModel):
    """Where cached responses live: a bounded in-memory LRU, optionally a shared Redis."""

    max_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        gt=0,
        description="The in-memory LRU's size (bodies and headers); least recently used entries go first.",
    )
    redis: CacheRedis | None = Field(
        None,
        description="Also keep entries in Redis, shared by several gateways (memory stays in front).",
    )


class PythonEndpoints(StrictModel):
    """Modules that register Python endpoints."""


class PushChannelMap(StrictModel):
    """Events of one bus channel turned into push messages."""

    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="The bus channel, e.g. `jobs`.")
    topic: TopicTemplateText = Field(
        description="Topic template filled from the event's JSON fields, e.g. `jobs/{job_id}` or "
        "`orders/{order.id}`; an event missing a field is skipped."
    )
    types: list[str] | None = Field(
        None, min_length=1, description="Event types to push (e.g. `job.progress.v1`); absent means all."
    )


class PushBusSource(StrictModel):
    """Take push messages from the event bus: every gateway process sees every event."""

    transport: Literal["nats", "rabbitmq"] = Field("nats", description="The broker the services publish to.")
    url: str = Field(
        "nats://127.0.0.1:4222",
        description="Broker URL (`nats://host:4222`, `amqp://user:pass@host:5672/`).",
    )
    prefix: str = Field(
        "ew", pattern=r"^[a-z][a-z0-9]{0,15}$", description="The bus prefix the services use (default `ew`)."
    )
    channels: list[PushChannelMap] = Field(min_length=1, description="Channels to follow and their topics.")
    connect_timeout: Duration = Field(
        10.0, gt=0, description="The gateway fails to start when the broker does not answer within this."
    )


class PushSettings(StrictModel):
    """Where pushed messages come from (the event bus, or a source given in Python)."""

    bus: PushBusSource | None = Field(None, description="Take messages from the event bus.")
    sources: list[str] = Field(
        default_factory=list,
        description="`module:attribute` of PushSource factories (Python sources besides the bus).",
    )
    replay_messages: int = Field(
        100,
        ge=0,
        le=10_000,
        description="Recent messages kept per topic for resuming clients (`Last-Event-ID`).",
    )
    replay_bytes: ByteSize = Field(
        16 * 1024 * 1024,
        ge=0,
        description="All kept messages together; the least recently used topics' messages go first.",
    )
    replay_ttl: Duration = Field(300.0, gt=0, description="Kept messages older than this are not replayed.")
    max_message_bytes: ByteSize = Field(
        256 * 1024, gt=0, description="A larger message from a source is dropped (and logged)."
    )

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for path in value:
            if re.fullmatch(_IMPORT_PATH, path) is None:
                raise PydanticCustomError(
                    "import_path", "'{path}' is not a `module:attribute` path", {"path": path}
                )
        return value
