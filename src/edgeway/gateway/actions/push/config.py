"""Config of push channels: the ``push`` action of a route (its topics and who may subscribe) and
where pushed messages come from (``push`` at the top level: the event bus, Python sources)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.bus.urls import safe_url
from edgeway.gateway.actions.push.topics import TopicPatternError, parse_topic_pattern, parse_topic_template
from edgeway.gateway.config.base import LocatedProblemsError, StrictModel, broker_setting
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import ByteSize, Duration

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
        5.0,
        gt=0,
        description="Time a client gets to take the end of its connection (a WebSocket close frame, "
        "the last SSE event) before it is cut off; a slow consumer is cut off this long after its queue "
        "overflows.",
    )

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


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
        description="Broker URL (`nats://host:4222`, a NATS cluster's servers comma-separated, or "
        "`amqp://user:pass@host:5672/`).",
    )
    prefix: str = Field(
        "ew", pattern=r"^[a-z][a-z0-9]{0,15}$", description="The bus prefix the services use (default `ew`)."
    )
    channels: list[PushChannelMap] = Field(min_length=1, description="Channels to follow and their topics.")
    connect_timeout: Duration = Field(
        10.0, gt=0, description="The gateway fails to start when the broker does not answer within this."
    )

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return broker_setting(value)

    @model_validator(mode="after")
    def _url_fits_transport(self) -> PushBusSource:
        is_nats = self.url.lstrip().lower().startswith(("nats://", "tls://"))
        if is_nats != (self.transport == "nats"):
            raise PydanticCustomError(
                "url",
                "transport {transport} does not fit the URL {url}",
                {"transport": self.transport, "url": safe_url(self.url)},
            )
        return self


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
