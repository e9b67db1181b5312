"""Config of composition at the edge: aggregate endpoints, Python endpoints, push channels and
the response cache.

Owned by the composition work (issue 3); the fields grow here without touching ``schema.py``.
Each action model offers ``service_refs()`` (the services it calls, with their key paths) so the
top-level cross-checks can report unknown services for every action alike.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.bus.urls import safe_url
from edgeway.gateway.config.aggregate_checks import META_KEY, CallFacts, check_calls
from edgeway.gateway.config.base import TOKEN, HeaderName, LocatedProblemsError, StrictModel, broker_setting
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.templates import Ref, Steps, Template, TemplateError, parse_steps, parse_template
from edgeway.gateway.config.topics import TopicPatternError, parse_topic_pattern, parse_topic_template
from edgeway.gateway.config.units import ByteSize, Duration
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS

if TYPE_CHECKING:
    from edgeway.gateway.config.patterns import PathPattern

# Copied onto every call unless a list is configured, besides the identity headers the auth
# filter sets (`auth.headers`): the bearer token (absent when `auth.pass_token` is false: the
# filter strips it) and the caller's language.
BASE_FORWARD_HEADERS = ("authorization", "accept-language")
_FORWARD_DEFAULT = (
    "absent: the identity headers the auth filter sets (`auth.headers`; none without `auth`), "
    "Authorization and Accept-Language."
)
_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[^.\[\]{}\s]+")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Headers the gateway writes on every call itself; copying the client's would duplicate them.
_GATEWAY_OWNED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "x-request-id",
        "traceparent",
    }
) | frozenset(name.decode() for name in FORWARDING_HEADERS)  # by edgeway.gateway.upstream.forwarding's rule


def _forwardable(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    problems: list[tuple[Loc, str]] = [
        ((index,), f"'{name}' is set by the gateway on every call; it cannot be copied from the client")
        for index, name in enumerate(value)
        if name.lower() in _GATEWAY_OWNED
    ]
    if problems:
        raise LocatedProblemsError(problems)
    return value


class AggregateCall(StrictModel):
    """One service call of an aggregate endpoint."""

    service: str = Field(description="Name of a service under `services`.")
    method: str = Field("GET", description="HTTP method of the call.")
    path: str = Field(
        description="Upstream path template, e.g. `/orders/{path.id}` or `/users/{calls.order.user_id}` "
        "(see docs/aggregation.md for references)."
    )
    query: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters, each a template; a parameter whose only reference is missing "
        "is left out.",
    )
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, description="Request headers, each a template."
    )
    body: Any = Field(
        None,
        description="`client` forwards the client's body as is; any other value is a JSON template "
        "(strings in it are templates; a string that is exactly one reference keeps the value's type).",
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto this call; absent means the endpoint's list."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Calls that must finish first, besides those this call's templates reference.",
    )
    for_each: str | None = Field(
        None,
        description="Fan out: one call per element of this list reference, e.g. "
        "`{calls.order.items[*].product_id}`; the element is `{item}`. The output is the list of "
        "results in element order.",
    )
    batch: str | None = Field(
        None,
        description="One call for all elements of this list reference; `{batch}` is the values joined "
        "by `batch_separator` in the path, query and headers, the JSON list in a body.",
    )
    batch_separator: str = Field(",", description="Joins batched values in the path, query and headers.")
    concurrency: int = Field(8, ge=1, le=256, description="Fan-out calls in flight at once.")
    on_item_error: Literal["fail", "null", "drop"] = Field(
        "fail",
        description="A failed fan-out element: `fail` fails the call; `null` puts null in its place; "
        "`drop` leaves it out (both mark the response incomplete).",
    )
    timeout: Duration | None = Field(
        None, gt=0, description="Time for each HTTP exchange of this call; absent means the service's."
    )
    required: bool = Field(
        True,
        description="A failed required call fails the endpoint; a failed optional one is reported in "
        "`_meta` and the rest is answered. Absent: required, unless the call has a `fallback`.",
    )
    fallback: Any = Field(
        None,
        description="Value used in place of the shaped response when the call fails (the call becomes "
        "optional); also what dependent calls read.",
    )
    unwrap: str | None = Field(
        None, description="Dotted path of the part of the response to keep, e.g. `data`."
    )
    allow: list[str] | None = Field(
        None, description="Dotted paths to keep (everything else is dropped), e.g. `[id, items[*].sku]`."
    )
    deny: list[str] | None = Field(None, description="Dotted paths to drop.")
    rename: dict[str, str] = Field(
        default_factory=dict,
        description="Dotted path → new key name, renaming the last key in place: "
        "`{customer.name: full_name}`.",
    )
    group: str | None = Field(None, description="Key to put this call's output under in the response.")
    hidden: bool = Field(
        False,
        description="The response only feeds other calls (ids to look up, a token): it is not part "
        "of the endpoint's answer.",
    )
    collection: bool = Field(
        False,
        description="The response is a JSON array: shaping applies to each element, and `group` is needed "
        "to place it (an array has no keys to merge).",
    )

    _facts: CallFacts | None = PrivateAttr(None)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if TOKEN.fullmatch(value) is None:
            raise PydanticCustomError("method", "'{method}' is not an HTTP method", {"method": value})
        return value.upper()

    _forward = field_validator("forward_headers")(_forwardable)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and _PLAIN_KEY.fullmatch(value) is None:
            raise PydanticCustomError("group", "group '{group}' must be one plain key", {"group": value})
        if value == META_KEY:
            raise PydanticCustomError("group", "'_meta' is reserved for the gateway's completion report")
        return value

    @property
    def has_fallback(self) -> bool:
        return "fallback" in self.model_fields_set

    @property
    def facts(self) -> CallFacts:
        """The parsed templates and paths (set by validation)."""
        assert self._facts is not None  # set by the validator of every constructed instance
        return self._facts

    @model_validator(mode="after")
    def _parse(self) -> AggregateCall:
        problems: list[tuple[Loc, str]] = []

        def template(loc: Loc, text: str) -> Template | None:
            try:
                return parse_template(text)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                return None

        def steps(loc: Loc, text: str, *, indices: bool = True) -> Steps | None:
            try:
                parsed = parse_steps(text)
            except TemplateError as exc:
                problems.append((loc, str(exc)))
                return None
            if not parsed:
                problems.append((loc, "a dotted path may not be empty"))
                return None
            if not indices and any(isinstance(step, int) for step in parsed):
                problems.append((loc, f"{text!r}: use '[*]' for lists here, not a position"))
                return None
            return parsed

        path = template(("path",), self.path)
        if path is not None and not self.path.startswith("/"):
            problems.append((("path",), f"path {self.path!r} must start with '/'"))
        query = {k: t for k, v in self.query.items() if (t := template(("query", k), v)) is not None}
        headers = {k: t for k, v in self.headers.items() if (t := template(("headers", k), v)) is not None}
        body_refs: list[tuple[Loc, Ref]] = []
        if self.body is not None and self.body != "client":
            _body_templates(self.body, ("body",), template, body_refs)
        fan: dict[str, Template] = {}
        for key in ("for_each", "batch"):
            text = getattr(self, key)
            if text is not None and (t := template((key,), text)) is not None:
                if t.whole is None:
                    problems.append(
                        ((key,), f"{key} must be exactly one reference, e.g. '{{calls.x.items[*].id}}'")
                    )
                elif t.whole.source in {"item", "batch"}:
                    problems.append(((key,), f"{key} cannot read '{{{t.whole.text}}}'"))
                else:
                    fan[key] = t
        unwrap = steps(("unwrap",), self.unwrap) if self.unwrap is not None else None
        allow = [s for i, p in enumerate(self.allow or ()) if (s := steps(("allow", i), p, indices=False))]
        deny = [s for i, p in enumerate(self.deny or ()) if (s := steps(("deny", i), p, indices=False))]
        rename: list[tuple[Steps, str]] = []
        for source, target in self.rename.items():
            parsed = steps(("rename", source), source, indices=False)
            if _PLAIN_KEY.fullmatch(target) is None:
                problems.append((("rename", source), f"the new name {target!r} must be one plain key"))
            elif parsed is not None:
                rename.append((parsed, target))
        if self.for_each is not None and self.batch is not None:
            problems.append((("batch",), "set either for_each or batch, not both"))
        if self.has_fallback:
            if "required" not in self.model_fields_set:
                # A fallback stands in for a failed call: by itself it makes the call optional.
                self.required = False
            elif self.required:
                problems.append(
                    (
                        ("fallback",),
                        "a required call has no use for a fallback: drop `required: true` or the fallback",
                    )
                )
        if problems:
            raise LocatedProblemsError(problems)
        assert path is not None
        self._facts = CallFacts(
            path=path,
            query=query,
            headers=headers,
            body_refs=tuple(body_refs),
            for_each=fan.get("for_each"),
            batch=fan.get("batch"),
            unwrap=unwrap,
            allow=tuple(allow) if self.allow is not None else None,
            deny=tuple(deny),
            rename=tuple(rename),
        )
        return self


def _body_templates(
    value: Any, loc: Loc, template: Callable[[Loc, str], Template | None], refs: list[tuple[Loc, Ref]]
) -> None:
    """Parse every string of a body template (to report errors and collect references)."""
    if isinstance(value, str):
        parsed = template(loc, value)
        if parsed is not None:
            refs.extend((loc, ref) for ref in parsed.refs)
    elif isinstance(value, dict):
        for key, child in value.items():
            _body_templates(child, (*loc, str(key)), template, refs)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _body_templates(child, (*loc, index), template, refs)


class AggregateAction(StrictModel):
    """Call several services (in parallel where independent) and answer with one response."""

    calls: dict[str, AggregateCall] = Field(
        min_length=1, description="The calls by name; the name is how other calls and `_meta` refer to it."
    )
    merge: Literal["strict", "namespaced", "deep", "override"] = Field(
        "strict",
        description="How outputs combine: `strict` refuses (at load) two calls that could write the same "
        "top-level key; `namespaced` puts each call without `group` under its name; `deep` merges objects "
        "recursively; `override` lets the later call in this list win a key.",
    )
    deadline: Duration | None = Field(
        None,
        gt=0,
        description="The whole endpoint's time budget; calls still running then count as timed out.",
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto every call; " + _FORWARD_DEFAULT
    )
    max_response_bytes: ByteSize = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest response body a call may return; a larger one (by its Content-Length, or "
        "as it arrives) fails the call with 502, code `too_large`.",
    )

    _order: tuple[str, ...] = PrivateAttr(())
    _forward = field_validator("forward_headers")(_forwardable)

    @field_validator("calls")
    @classmethod
    def _names(cls, value: dict[str, AggregateCall]) -> dict[str, AggregateCall]:
        for name in value:
            if _CALL_NAME.fullmatch(name) is None:
                raise PydanticCustomError(
                    "call_name", "call name '{name}' may use letters, digits and '_' only", {"name": name}
                )
            if name == META_KEY:  # with merge: namespaced, a call's name is its key in the response
                raise PydanticCustomError(
                    "call_name", "call name '_meta' is reserved for the gateway's completion report"
                )
        return value

    @model_validator(mode="after")
    def _graph(self) -> AggregateAction:
        order, problems = check_calls(self.calls, self.merge)
        if problems:
            raise LocatedProblemsError(problems)
        self._order = order
        return self

    @property
    def order(self) -> tuple[str, ...]:
        """Call names in an order where every call comes after its dependencies."""
        return self._order

    def bind(self, pattern: PathPattern) -> list[tuple[Loc, str]]:
        """Check the `{path.x}` references against the route's path pattern."""
        names = pattern.param_names
        problems: list[tuple[Loc, str]] = []
        for call_name, call in self.calls.items():
            for loc, ref in call.facts.located_refs():
                if ref.source == "path" and ref.name not in names:
                    defined = ", ".join(names) or "none"
                    problems.append(
                        (
                            ("calls", call_name, *loc),
                            f"'{{{ref.text}}}': path {pattern.text!r} has no parameter '{ref.name}' "
                            f"(defined: {defined})",
                        )
                    )
        return problems

    def service_refs(self) -> list[tuple[Loc, str]]:
        return [(("calls", name, "service"), call.service) for name, call in self.calls.items()]


class EndpointAction(StrictModel):
    """Answer with a Python function registered by a module named in `python.modules`."""

    name: str = Field(
        min_length=1, description="The registered endpoint's name (the function name by default)."
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto the function's service calls; " + _FORWARD_DEFAULT
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form settings the function reads as `req.options` (one function serving "
        "several profiles).",
    )

    _forward = field_validator("forward_headers")(_forwardable)

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
        5.0,
        gt=0,
        description="Time a client gets to take the end of its connection (a WebSocket close frame, "
        "the last SSE event) before it is cut off; a slow consumer is cut off this long after its queue "
        "overflows.",
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

    modules: list[str] = Field(
        min_length=1, description="Modules to import (dotted names); their `@endpoint` functions register."
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Directories put first on the import path before importing, relative to the "
        "directory the gateway starts in.",
    )

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if _MODULE.fullmatch(name) is None:
                raise PydanticCustomError(
                    "module", "'{name}' is not a dotted module name like myapp.bff", {"name": name}
                )
        return value


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


def check_python_endpoints(
    python: PythonEndpoints | None, routes: Sequence[EndpointRoute]
) -> list[tuple[Loc, str]]:
    """Import the configured modules and check every `endpoint` route against what they
    registered: the name exists, and a declared method and path are the route's.

    Run at config load, so ``edgeway config check`` reports a typo or a broken module with the
    file and line of the config key, not at the first request.
    """
    uses = [(index, route) for index, route in enumerate(routes) if route.endpoint is not None]
    if python is None:
        return [
            (
                ("routes", index, "endpoint"),
                "a Python endpoint needs `python: {modules: [...]}` naming the modules that register it",
            )
            for index, _ in uses
        ]
    # Imported here: the registry is part of the running gateway, which imports this schema.
    from edgeway.gateway.actions.endpoints.registry import load_modules

    found, problems = load_modules(python.modules, python.paths)
    if any(loc[:2] == ("python", "modules") for loc, _ in problems):
        return problems  # a module that did not import explains any name it would have registered
    modules = ", ".join(python.modules)
    for index, route in uses:
        assert route.endpoint is not None
        name = route.endpoint.name
        spec = found.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(found), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            known = ", ".join(sorted(found)) or "none"
            problems.append(
                (
                    ("routes", index, "endpoint", "name"),
                    f"no endpoint '{name}' in {modules} ({hint}registered: {known})",
                )
            )
            continue
        match = route.match
        if spec.path is not None and spec.path != match.path:
            problems.append(
                (
                    ("routes", index, "match", "path"),
                    f"endpoint '{name}' ({spec.where}) is declared for path {spec.path!r}, "
                    f"not {match.path!r}",
                )
            )
        if spec.method is not None and (match.methods is None or spec.method not in match.methods):
            took = "any method" if match.methods is None else ", ".join(match.methods)
            problems.append(
                (
                    ("routes", index, "match", "methods"),
                    f"endpoint '{name}' ({spec.where}) is declared for {spec.method}; the route "
                    f"takes {took}: set methods: [{spec.method}]",
                )
            )
    return problems


class EndpointRoute(Protocol):
    """What :func:`check_python_endpoints` reads of a route."""

    @property
    def endpoint(self) -> EndpointAction | None: ...

    @property
    def match(self) -> MatchLike: ...


class MatchLike(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def methods(self) -> list[str] | None: ...
