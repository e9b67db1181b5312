"""An aggregate endpoint compiled once from its config into plain objects the hot path runs
without lookups: per call a cluster, renderers for its target, headers and body (closures over
parsed templates), a shaper and a placement, and for the endpoint the dependency order.

:class:`Scope` is what one request's templates read: the route's path parameters, the client's
query, headers and JSON body (parsed on first use), the caller's identity, and the responses of
the calls done so far.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import orjson

from edgeway.gateway.actions.aggregate.checks import effective_group
from edgeway.gateway.actions.aggregate.shaping import Shaper, compile_shaper
from edgeway.gateway.actions.aggregate.templates import Ref, Template, format_steps, parse_template
from edgeway.gateway.actions.aggregate.values import MISSING, as_text, lookup
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS
from edgeway.gateway.upstream.service_client import CallLimits, forward_names
from edgeway.http import json_input
from edgeway.http.headers import HOP_BY_HOP
from edgeway.http.json_input import TooDeep
from edgeway.http.outgoing import header_value_ok
from edgeway.resilience.deadline import DEADLINE_HEADER
from edgeway.resilience.guard import ServiceGuard

if TYPE_CHECKING:
    from edgeway.gateway.actions.aggregate.config import AggregateAction, AggregateCall
    from edgeway.gateway.actions.transcode.invoker import GrpcChannels
    from edgeway.gateway.actions.transcode.pending import GrpcCaller
    from edgeway.gateway.filters.auth.config import GatewayAuth

# Sources that come from the client's request: a value missing there is the client's mistake.
CLIENT_SOURCES = frozenset({"path", "query", "header", "body", "identity"})
# Headers the gateway writes itself on every call; never copied from the client.
OWN_HEADERS = (
    HOP_BY_HOP
    | {
        b"host",
        b"content-length",
        b"content-type",
        b"x-request-id",
        b"traceparent",
        DEADLINE_HEADER,
    }
    | FORWARDING_HEADERS
)


class MissingValue(Exception):
    """A reference found nothing; the call cannot be made."""

    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        self.from_client = ref.source in CLIENT_SOURCES
        super().__init__(_missing_reason(ref))


class BadValue(Exception):
    """A value cannot go where a template puts it (a line break in a header, a non-JSON body)."""

    def __init__(self, reason: str, *, from_client: bool) -> None:
        super().__init__(reason)
        self.from_client = from_client


def _missing_reason(ref: Ref) -> str:
    where = format_steps(ref.steps)
    if ref.source == "calls":
        return f"the response of '{ref.name}' has no '{where}'" if where else f"'{ref.name}' has no value"
    if ref.source == "path":
        return f"the path has no parameter '{ref.name}'"
    if ref.source == "query":
        return f"the request has no query parameter '{ref.name}'"
    if ref.source == "header":
        return f"the request has no header '{ref.name}'"
    if ref.source == "body":
        return f"the request body has no '{where}'"
    if ref.source == "identity":
        return "the request is not authenticated" if not where else f"the caller's identity has no '{where}'"
    return f"the fan-out element has no '{where}'" if where else "no fan-out element"


class Scope:
    """What one request's templates read."""

    __slots__ = ("_body", "_headers", "_identity", "_query", "body_bytes", "ctx", "raw")

    def __init__(self, ctx: RequestContext, body_bytes: bytes | None) -> None:
        self.ctx = ctx
        self.body_bytes = body_bytes
        self.raw: dict[str, Any] = {}  # call name -> its response (or fallback), for references
        self._query: dict[str, list[str]] | None = None
        self._headers: dict[str, str] | None = None
        self._body: Any = MISSING
        self._identity: Any = MISSING

    def path_param(self, name: str) -> Any:
        return self.ctx.match.params.get(name, MISSING)

    def query(self, name: str) -> Any:
        if self._query is None:
            self._query = parse_qs(self.ctx.ex.query.decode("latin-1"), keep_blank_values=True)
        values = self._query.get(name)
        return values[0] if values else MISSING

    def header(self, name: str) -> Any:
        if self._headers is None:
            headers: dict[str, str] = {}
            for key, value in self.ctx.ex.headers:
                headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
            self._headers = headers
        return self._headers.get(name, MISSING)

    def body(self) -> Any:
        if self._body is MISSING:
            if not self.body_bytes:
                self._body = None
            else:
                try:
                    self._body = json_input.loads(self.body_bytes)
                except TooDeep as exc:
                    raise BadValue(f"the request body is {exc}", from_client=True) from None
                except orjson.JSONDecodeError:
                    raise BadValue("the request body is not valid JSON", from_client=True) from None
        return self._body

    def identity(self) -> Any:
        if self._identity is MISSING:
            who = self.ctx.identity
            self._identity = (
                None
                if who is None
                else {
                    "subject": who.subject,
                    "client_id": who.client_id,
                    "roles": sorted(who.roles),
                    "scopes": sorted(who.scopes),
                    "claims": dict(who.claims),
                }
            )
        return self._identity


Resolver = Callable[[Scope, Any], Any]  # (scope, fan-out element) -> value or MISSING


def compile_ref(ref: Ref) -> Resolver:
    steps, name = ref.steps, ref.name or ""
    source = ref.source
    if source == "path":
        return lambda scope, item: scope.path_param(name)
    if source == "query":
        return lambda scope, item: scope.query(name)
    if source == "header":
        lname = name.lower()
        return lambda scope, item: scope.header(lname)
    if source == "calls":
        return lambda scope, item: lookup(scope.raw.get(name, MISSING), steps)
    if source == "body":
        return lambda scope, item: lookup(scope.body(), steps)
    if source == "identity":
        return lambda scope, item: (
            MISSING if (who := scope.identity()) is None else lookup(who, steps) if steps else who
        )
    if source == "item":
        return lambda scope, item: lookup(item, steps) if steps else item
    return lambda scope, item: item  # batch


def _resolve(ref: Ref, resolver: Resolver, scope: Scope, item: Any) -> Any:
    value = resolver(scope, item)
    if value is MISSING:
        raise MissingValue(ref)
    return value


TextRenderer = Callable[[Scope, Any], str | None]  # None: leave the parameter or header out


def compile_text(template: Template, *, encode: bool, separator: str, optional: bool) -> TextRenderer:
    """A template rendered to text; ``encode`` percent-encodes values (paths and queries);
    ``optional``: a template that is one missing reference renders None (left out)."""
    if template.is_literal:
        text = "".join(part for part in template.parts if isinstance(part, str))
        return lambda scope, item: text
    pieces: list[tuple[str | None, Ref | None, Resolver | None]] = [
        (part, None, None) if isinstance(part, str) else (None, part, compile_ref(part))
        for part in template.parts
    ]
    whole = template.whole

    def render(scope: Scope, item: Any) -> str | None:
        out: list[str] = []
        for literal, ref, resolver in pieces:
            if literal is not None:
                out.append(literal)
                continue
            assert ref is not None
            assert resolver is not None
            value = resolver(scope, item)
            if value is MISSING:
                if optional and ref is whole:
                    return None
                raise MissingValue(ref)
            text = as_text(value, separator)
            # Path parameters arrive percent-encoded already (the router matches encoded paths).
            out.append(quote(text, safe="") if encode and ref.source != "path" else text)
        return "".join(out)

    return render


def compile_target(
    path: Template, query: Mapping[str, Template], separator: str
) -> Callable[[Scope, Any], bytes]:
    """The request target (path and query) renderer; a constant when nothing is templated."""
    render_path = compile_text(path, encode=True, separator=separator, optional=False)
    params = tuple(
        (quote(key, safe=""), compile_text(t, encode=True, separator=separator, optional=True))
        for key, t in query.items()
    )
    joiner = "&" if "?" in path.text else "?"

    def render(scope: Scope, item: Any) -> bytes:
        target = render_path(scope, item)
        assert target is not None  # a path is never optional
        if params:
            pairs = [f"{key}={value}" for key, part in params if (value := part(scope, item)) is not None]
            if pairs:
                target += joiner + "&".join(pairs)
        # Everything templated was percent-encoded: the target is ASCII.
        return target.encode()

    if path.is_literal and all(t.is_literal for t in query.values()):
        constant = render(None, None)  # type: ignore[arg-type]  # literals read no scope
        return lambda scope, item: constant
    return render


def compile_headers(headers: Mapping[str, Template], separator: str) -> Callable[[Scope, Any], bytes]:
    """The call's own headers as lines; a header whose only reference is missing is left out,
    and a value with a line break (from a response) fails the call instead of splitting it."""
    parts = tuple(
        (
            key.lower().encode(),
            compile_text(t, encode=False, separator=separator, optional=True),
            any(ref.source in CLIENT_SOURCES for ref in t.refs),
        )
        for key, t in headers.items()
    )

    def render(scope: Scope, item: Any) -> bytes:
        out: list[bytes] = []
        for name, part, from_client in parts:
            text = part(scope, item)
            if text is None:
                continue
            if not header_value_ok(text):
                raise BadValue(
                    f"header '{name.decode()}' would hold a line break or another control character",
                    from_client=from_client,
                )
            out += (name, b": ", text.encode(), b"\r\n")
        return b"".join(out)

    if all(t.is_literal for t in headers.values()):
        constant = render(None, None)  # type: ignore[arg-type]  # literals read no scope
        return lambda scope, item: constant
    return render


BodyRenderer = Callable[[Scope, Any], bytes | None]


def compile_body(body: Any, separator: str) -> tuple[BodyRenderer, bytes | None]:
    """The body renderer and its content type (None: the client's own)."""
    if body is None:
        return (lambda scope, item: None), None
    if body == "client":
        return (lambda scope, item: scope.body_bytes or b""), None

    def build(value: Any) -> Callable[[Scope, Any], Any]:
        if isinstance(value, str):
            template = parse_template(value)
            whole = template.whole
            if whole is not None:
                resolver = compile_ref(whole)
                return lambda scope, item: resolver(scope, item)
            text = compile_text(template, encode=False, separator=separator, optional=False)
            return lambda scope, item: text(scope, item)
        if isinstance(value, dict):
            members = [(key, build(child)) for key, child in value.items()]
            return lambda scope, item: {
                key: v for key, render in members if (v := render(scope, item)) is not MISSING
            }
        if isinstance(value, list):
            elements = [build(child) for child in value]
            return lambda scope, item: [None if (v := e(scope, item)) is MISSING else v for e in elements]
        return lambda scope, item: value

    render = build(body)
    if _static(body):
        encoded = orjson.dumps(render(None, None))  # type: ignore[arg-type]  # literals read no scope
        return (lambda scope, item: encoded), b"application/json"
    top = parse_template(body).whole if isinstance(body, str) else None

    def encode(scope: Scope, item: Any) -> bytes:
        value = render(scope, item)
        if value is MISSING:  # the whole body is one reference, and it found nothing
            assert top is not None
            raise MissingValue(top)
        return orjson.dumps(value)

    return encode, b"application/json"


def _static(value: Any) -> bool:
    if isinstance(value, str):
        return parse_template(value).is_literal
    if isinstance(value, dict):
        return all(_static(v) for v in value.values())
    if isinstance(value, list):
        return all(_static(v) for v in value)
    return True


@dataclass(eq=False, slots=True)
class CallPlan:
    """One call, ready to run."""

    name: str
    cluster: Cluster
    guard: ServiceGuard[Endpoint] | None  # the service's resilience; None: it configures none
    method: bytes
    required: bool
    has_fallback: bool
    fallback: Any
    deps: tuple[str, ...]
    target: Callable[[Scope, Any], bytes]  # path and query
    own_headers: Callable[[Scope, Any], bytes]  # the call's `headers`, as header lines
    forward: frozenset[bytes]
    body: BodyRenderer
    content_type: bytes | None  # None: the client's (body: client) or no body
    fan_ref: Ref | None
    fan_kind: str | None  # "for_each" | "batch" | None
    concurrency: int
    on_item_error: str
    limits: CallLimits
    shape: Shaper
    group: str | None
    collection: bool
    hidden: bool
    dependents: list[CallPlan] = field(default_factory=list)
    grpc: GrpcCaller | None = None  # a gRPC method instead of an HTTP request

    @property
    def fan_resolver(self) -> Resolver:
        assert self.fan_ref is not None
        return compile_ref(self.fan_ref)


@dataclass(frozen=True, slots=True)
class Plan:
    calls: tuple[CallPlan, ...]  # in dependency order
    declared: tuple[CallPlan, ...]  # in config order: the merge order
    flat: bool  # no dependencies and no fan-out: every call starts at once
    direct: bool  # flat and no call guarded: answers are awaited in declared order
    merge: str
    deadline: float | None
    needs_client_body: bool


def compile_plan(
    action: AggregateAction,
    clusters: Mapping[str, Cluster],
    auth: GatewayAuth | None = None,
    guards: Mapping[str, ServiceGuard[Endpoint] | None] | None = None,
    *,
    client_certs: bool = False,
    grpc_channels: GrpcChannels | None = None,
) -> Plan:
    """``auth`` is the gateway's token verification (its identity header names are forwarded);
    ``guards`` the resilience of the services the calls reach (by name; absent: none);
    ``client_certs``: the listener asks for client certificates (their headers are forwarded);
    ``grpc_channels``: the gateway's gRPC channels, needed when a call is ``grpc``."""
    plans: dict[str, CallPlan] = {}
    for name in action.order:
        plans[name] = _compile_call(
            name, action.calls[name], action, clusters, auth, guards or {}, client_certs
        )
        if action.calls[name].grpc is not None:
            assert grpc_channels is not None, "a grpc call needs the gateway's channels"
            plans[name].grpc = _grpc_caller(action.calls[name], plans[name], grpc_channels)
    for plan in plans.values():
        for dep in plan.deps:
            plans[dep].dependents.append(plan)
    ordered = tuple(plans[name] for name in action.order)
    declared = tuple(plans[name] for name in action.calls)
    flat = all(not p.deps and p.fan_kind is None for p in ordered)
    needs_body = any(
        call.body == "client" or any(ref.source == "body" for _, ref in call.facts.located_refs())
        for call in action.calls.values()
    )
    direct = flat and all(p.guard is None for p in ordered)
    return Plan(ordered, declared, flat, direct, action.merge, action.deadline, needs_body)


def _compile_call(
    name: str,
    call: AggregateCall,
    action: AggregateAction,
    clusters: Mapping[str, Cluster],
    auth: GatewayAuth | None,
    guards: Mapping[str, ServiceGuard[Endpoint] | None],
    client_certs: bool,
) -> CallPlan:
    facts = call.facts
    sep = call.batch_separator
    deps: list[str] = []
    for dep in [*(ref.name for _, ref in facts.located_refs() if ref.call), *call.depends_on]:
        if dep is not None and dep not in deps:
            deps.append(dep)
    forward = forward_names(
        call.forward_headers if call.forward_headers is not None else action.forward_headers,
        auth,
        client_certs=client_certs,
    )
    body, content_type = compile_body(call.body, sep)
    fan = facts.for_each or facts.batch
    group = effective_group(name, call, action.merge)
    return CallPlan(
        name=name,
        cluster=clusters[call.service],
        guard=guards.get(call.service),
        method=call.method.encode(),
        required=call.required,
        has_fallback=call.has_fallback,
        fallback=call.fallback,
        deps=tuple(deps),
        target=compile_target(facts.path, facts.query, sep),
        own_headers=compile_headers(facts.headers, sep),
        forward=forward - OWN_HEADERS,
        body=body,
        content_type=content_type,
        fan_ref=fan.whole if fan is not None else None,
        fan_kind="for_each" if facts.for_each is not None else "batch" if facts.batch is not None else None,
        concurrency=call.concurrency,
        on_item_error=call.on_item_error,
        limits=CallLimits.of(clusters[call.service], call.timeout, int(action.max_response_bytes)),
        shape=compile_shaper(
            unwrap=facts.unwrap,
            allow=facts.allow,
            deny=facts.deny,
            rename=facts.rename,
            collection=call.collection,
            needs_object=group is None and facts.for_each is None and not call.hidden,
        ),
        group=group,
        collection=call.collection,
        hidden=call.hidden,
    )


def _grpc_caller(call: AggregateCall, plan: CallPlan, channels: GrpcChannels) -> GrpcCaller:
    # Imported here: grpcio and protobuf load only for a gateway with a gRPC call.
    from edgeway.gateway.actions.transcode.pending import GrpcCaller

    assert call.grpc is not None
    return GrpcCaller(
        channels=channels,
        cluster=plan.cluster,
        guard=plan.guard,
        info=call.grpc.info,
        timeout=plan.limits.total,
        options=call.grpc.json_options(),
        input_from_client=call.body == "client"
        or any(ref.source in CLIENT_SOURCES for _, ref in call.facts.located_refs()),
    )
