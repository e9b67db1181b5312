"""The gateway config schema: pydantic models, every field described (the reference is generated
from these descriptions by ``scripts/gen_config_reference.py``).

Shape of a route, and how it grows: a route is a ``match`` block plus exactly one *action*
(``proxy`` today; ``aggregate``, ``redirect``, ``respond`` later, each a sibling field named in
``Route.ACTIONS``), plus optional per-route *filter* blocks (``auth``, ``rate_limit``, ``cors``,
``cache``) that later issues add as typed sibling fields. Nothing about the existing fields has
to move for that.

Checks that need more than one field (a route's service exists, route ids are unique, two routes
are not identical, a rewrite only uses the path's parameters) live in model validators that
raise :class:`LocatedProblemsError`, so that each problem keeps its own key path and every one of them is
reported, not just the first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import (
    TOKEN,
    HeaderName,
    HeaderValue,
    LocatedProblemsError,
    StrictModel,
)
from edgeway.gateway.config.compose_schema import (
    AggregateAction,
    CacheRule,
    CacheStore,
    EndpointAction,
    PushAction,
    PushSettings,
    PythonEndpoints,
    check_python_endpoints,
)
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.patterns import (
    PathPattern,
    PatternError,
    PatternKind,
    RewriteTemplate,
    parse_path_pattern,
    parse_rewrite,
)
from edgeway.gateway.config.resilience_schema import (
    BreakerRule,
    ConcurrencyRule,
    DiscoveryRule,
    HealthCheckRule,
    OutlierRule,
    ReloadSettings,
    RetryRule,
)
from edgeway.gateway.config.security_schema import (
    CorsRule,
    GatewayAuth,
    RateLimitRule,
    RateLimitStore,
    RequestValidation,
    RouteAuth,
    security_problems,
)
from edgeway.gateway.config.units import ByteSize, Duration

_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:\*\.)?{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_ROUTE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"

# What makes two routes indistinguishable to the router: (path, methods, hosts).
RouteIdentity = tuple[str, frozenset[str] | None, frozenset[str] | None]


# --------------------------------------------------------------------------- process level


class Listen(StrictModel):
    """Where a listener binds."""

    host: str = Field("127.0.0.1", description="Address to bind; `0.0.0.0` for every IPv4 interface.")
    port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="TCP port to bind; `0` takes a free port, reported in the `gateway listening` "
        "log line (one worker only).",
    )


class AdminListen(StrictModel):
    """Where the admin API (`/healthz`, `/readyz`, `/routes`, `/metrics`, `POST /reload`...) binds,
    and who may use it (see docs/gateway.md, "Admin API")."""

    host: str = Field(
        "127.0.0.1",
        description="Address to bind; keep it private. Beyond loopback the gateway needs a token "
        "(`token_file` or `EDGEWAY_ADMIN_TOKEN`) and warns at start.",
    )
    port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="TCP port to bind; `0` takes a free port, reported in the `gateway listening` "
        "log line (one worker only).",
    )
    token_file: str | None = Field(
        None,
        description="File holding the bearer token every admin endpoint but `/healthz` and `/readyz` "
        "requires. Unset: the `EDGEWAY_ADMIN_TOKEN` environment variable; with neither, a loopback "
        "admin API generates a token at start and writes it to `<runtime dir>/admin-<port>.token`.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names the admin API answers to besides IP addresses and `localhost` (any "
        "other Host is refused with 421, against DNS rebinding).",
    )


class Limits(StrictModel):
    """Downstream (client side) limits; each names the status answered when it is exceeded."""

    max_header_bytes: ByteSize = Field(
        16 * 1024, gt=0, description="All request header lines together; 431 when exceeded."
    )
    max_headers: int = Field(100, gt=0, description="Number of request header fields; 431 when exceeded.")
    max_url_bytes: ByteSize = Field(8 * 1024, gt=0, description="Request-target length; 414 when exceeded.")
    max_body_bytes: ByteSize | None = Field(
        10 * 1024 * 1024,
        description="Request body size; 413 when exceeded. `null` means unlimited (always streamed).",
    )
    header_read_timeout: Duration = Field(
        10.0, gt=0, description="Time for a client to send a complete request head; 408 after it."
    )
    body_read_timeout: Duration = Field(
        30.0,
        gt=0,
        description="Time a client may send nothing while its request body is being read; 408 after it "
        "(or the response is cut if it has started), and the connection closes.",
    )
    request_buffer_bytes: ByteSize = Field(
        256 * 1024,
        ge=0,
        description="A proxied request body up to this size is read whole before an upstream connection "
        "is taken, so a slow client holds none; a larger body streams once this much has arrived. "
        "`0` streams every body at once.",
    )
    keepalive_timeout: Duration = Field(
        75.0, gt=0, description="An idle keep-alive client connection is closed after this."
    )
    shutdown_grace: Duration = Field(
        30.0, ge=0, description="On SIGTERM, in-flight requests get this long to finish."
    )


class PathPolicy(StrictModel):
    """How request paths are normalised before routing (see docs/configuration.md)."""

    encoded_slash: Literal["reject", "decode", "keep"] = Field(
        "reject",
        description="`%2F` in a path: `reject` answers 400, `decode` treats it as `/`, "
        "`keep` leaves it as an opaque character inside a segment.",
    )
    case_sensitive: bool = Field(
        True, description="When false, paths are lower-cased before matching (and forwarded so)."
    )


class AccessLog(StrictModel):
    """One JSON line per request on stdout."""

    enabled: bool = Field(True, description="Write the access log.")


# --------------------------------------------------------------------------- services


def _check_instance_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https":
        raise PydanticCustomError(
            "instance_url",
            "https upstreams are not supported yet: use http:// (terminate TLS in front of the "
            "service or on a sidecar) in '{url}'",
            {"url": url},
        )
    if parts.scheme != "http":
        raise PydanticCustomError(
            "instance_url", "instance '{url}' must be an http:// URL like http://10.0.0.5:8000", {"url": url}
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise PydanticCustomError(
            "instance_url",
            "instance '{url}' needs a host and an explicit port, e.g. http://host:8000",
            {"url": url},
        )
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username or parts.password:
        raise PydanticCustomError(
            "instance_url",
            "instance '{url}' must be only scheme, host and port; rewrite paths on the route instead",
            {"url": url},
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}"


InstanceUrl = Annotated[str, AfterValidator(_check_instance_url)]


class Timeouts(StrictModel):
    """Upstream timeouts of one service; each answers 504 when it expires."""

    connect: Duration = Field(
        2.0,
        gt=0,
        description="Opening a TCP connection to an instance. Not set and longer than `total`: `total`.",
    )
    first_byte: Duration = Field(
        15.0,
        gt=0,
        description="From the end of the request to the start of the response head. "
        "Not set and longer than `total`: `total`.",
    )
    total: Duration = Field(30.0, gt=0, description="The whole exchange, bodies included.")

    @model_validator(mode="after")
    def _total_covers_phases(self) -> Timeouts:
        problems: list[tuple[Loc, str]] = []
        for name in ("connect", "first_byte"):
            if name not in self.model_fields_set:
                # A default the user never wrote must not refuse a short `total` they did write:
                # the phase simply cannot outlast the whole exchange.
                setattr(self, name, min(getattr(self, name), self.total))
            elif getattr(self, name) > self.total:
                problems.append(
                    ((name,), f"{name} ({getattr(self, name):g}s) exceeds total ({self.total:g}s)")
                )
        if problems:
            raise LocatedProblemsError(problems)
        return self


class Pool(StrictModel):
    """Connection pool per upstream instance."""

    max_connections: int | None = Field(
        None,
        gt=0,
        description="Open connections per instance; unset: no cap (a request that finds no idle "
        "connection opens one). With a cap, requests beyond it wait in arrival order up to "
        "`timeouts.connect`, then 503; throughput is then at most cap / service latency.",
    )
    max_idle: int = Field(
        1024,
        ge=0,
        description="Idle connections kept per instance for reuse; one more released is closed.",
    )
    idle_timeout: Duration = Field(60.0, gt=0, description="An idle pooled connection is closed after this.")


class Service(StrictModel):
    """An upstream service: one or more instances behind a load balancer."""

    instances: list[InstanceUrl] = Field(
        default_factory=list,
        description="Instance base URLs, `http://host:port` (no path); at least one unless "
        "`discovery` is set.",
    )
    balancer: Literal["round_robin", "least_outstanding"] = Field(
        "round_robin",
        description="`round_robin`, or `least_outstanding` (power of two choices on in-flight requests).",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    pool: Pool = Field(default_factory=Pool, description="Connection pool per instance.")
    discovery: DiscoveryRule | None = Field(
        None, description="Instances from DNS, the NATS KV registry or Consul, besides `instances`."
    )
    breaker: BreakerRule | None = Field(None, description="Circuit breaker per service and instance.")
    retry: RetryRule | None = Field(None, description="Retries where safe, within a retry budget.")
    outlier_ejection: OutlierRule | None = Field(
        None, description="Passive health: take failing instances out of the balancer for a while."
    )
    health_check: HealthCheckRule | None = Field(None, description="Active HTTP health checks per instance.")
    concurrency: ConcurrencyRule | None = Field(
        None, description="Load shedding: a bound on concurrent requests to this service."
    )

    @field_validator("instances")
    @classmethod
    def _unique_instances(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for url in value:
            if url in seen:
                raise PydanticCustomError("instance_url", "instance '{url}' is listed twice", {"url": url})
            seen.add(url)
        return value

    @model_validator(mode="after")
    def _instances_or_discovery(self) -> Service:
        if not self.instances and self.discovery is None:
            raise LocatedProblemsError(
                [(("instances",), "a service needs at least one instance, or a `discovery` rule")]
            )
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each instance, IPv6 hosts without brackets."""
        out: list[tuple[str, int]] = []
        for url in self.instances:
            parts = urlsplit(url)  # host and port presence were checked at validation
            out.append((parts.hostname or "", parts.port or 80))
        return out


# --------------------------------------------------------------------------- routes


class HeaderRules(StrictModel):
    """Header changes; `remove` runs before `set`."""

    set: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Headers to set, replacing any value already present."
    )
    remove: list[HeaderName] = Field(default_factory=list, description="Header names to remove.")

    @model_validator(mode="after")
    def _no_conflict(self) -> HeaderRules:
        removed = {name.lower() for name in self.remove}
        problems: list[tuple[Loc, str]] = [
            (("set", name), f"header '{name}' is both set and removed; keep one")
            for name in self.set
            if name.lower() in removed
        ]
        if problems:
            raise LocatedProblemsError(problems)
        return self

    @property
    def is_empty(self) -> bool:
        return not self.set and not self.remove


class ProxyAction(StrictModel):
    """Forward the request to a service."""

    service: str = Field(description="Name of a service under `services`.")
    strip_prefix: str | None = Field(
        None, description="Literal leading path segments to remove before forwarding, e.g. `/catalog`."
    )
    rewrite: str | None = Field(
        None,
        description="Upstream path template; may use the path's `{name}` parameters and `{**}` "
        "(the rest matched by a `/**` pattern); its text is visible ASCII (percent-encode the rest).",
    )
    request_headers: HeaderRules = Field(
        default_factory=HeaderRules, description="Changes to the request headers sent upstream."
    )
    response_headers: HeaderRules = Field(
        default_factory=HeaderRules, description="Changes to the response headers sent to the client."
    )
    websocket: bool = Field(False, description="Allow `Upgrade: websocket` tunnelling on this route.")
    websocket_idle_timeout: Duration = Field(
        300.0, gt=0, description="A tunnelled WebSocket with no traffic either way is closed after this."
    )

    _rewrite: RewriteTemplate | None = PrivateAttr(None)
    _strip: tuple[str, ...] = PrivateAttr(())

    @property
    def rewrite_template(self) -> RewriteTemplate | None:
        return self._rewrite

    @property
    def strip_segments(self) -> tuple[str, ...]:
        return self._strip

    def bind(self, pattern: PathPattern) -> list[tuple[Loc, str]]:
        """Check strip_prefix/rewrite against the route's pattern and keep the parsed forms."""
        problems: list[tuple[Loc, str]] = []
        if self.rewrite is not None and self.strip_prefix is not None:
            problems.append((("rewrite",), "set either strip_prefix or rewrite, not both"))
        if self.rewrite is not None:
            try:
                self._rewrite = parse_rewrite(self.rewrite, pattern)
            except PatternError as exc:
                problems.append((("rewrite",), str(exc)))
        if self.strip_prefix is not None:
            strip = self.strip_prefix.rstrip("/")
            segments = tuple(strip[1:].split("/")) if strip else ()
            if not self.strip_prefix.startswith("/") or "{" in strip or "*" in strip:
                problems.append(
                    (
                        ("strip_prefix",),
                        f"strip_prefix {self.strip_prefix!r} must be a literal path starting with '/'",
                    )
                )
            elif pattern.literal_prefix()[: len(segments)] != segments:
                problems.append(
                    (
                        ("strip_prefix",),
                        f"strip_prefix {self.strip_prefix!r} is not a prefix of the literal start of "
                        f"path {pattern.text!r}, so it would not apply to every matched request",
                    )
                )
            else:
                self._strip = segments
        return problems


RouteAction = ProxyAction | AggregateAction | EndpointAction | PushAction


class MatchRule(StrictModel):
    """Which requests a route takes."""

    path: str = Field(
        description="Exact `/a/b`, template `/users/{id}` or prefix `/catalog/**` (matches `/catalog` too)."
    )
    methods: list[str] | None = Field(
        None, min_length=1, description="Request methods (upper-cased); `null` or absent means any."
    )
    hosts: list[str] | None = Field(
        None,
        min_length=1,
        description="Host names, exact (`api.example.com`) or wildcard (`*.example.com`, any depth); "
        "absent means any. Compared without the port, case-insensitively.",
    )

    _pattern: PathPattern | None = PrivateAttr(None)

    @field_validator("path")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        try:
            parse_path_pattern(value)
        except PatternError as exc:
            raise PydanticCustomError("path_pattern", "{reason}", {"reason": str(exc)}) from exc
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out: list[str] = []
        for method in value:
            if TOKEN.fullmatch(method) is None:
                raise PydanticCustomError("method", "'{method}' is not an HTTP method", {"method": method})
            upper = method.upper()
            if upper in out:
                raise PydanticCustomError("method", "method {method} is listed twice", {"method": upper})
            out.append(upper)
        return out

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out: list[str] = []
        for host in value:
            lowered = host.lower().rstrip(".")
            if _IPV6_LITERAL.fullmatch(lowered) is None and _HOSTNAME.fullmatch(lowered) is None:
                hint = " (no port: hosts are compared without it)" if ":" in lowered else ""
                raise PydanticCustomError(
                    "host",
                    "'{host}' is not a host name or '*.suffix' wildcard{hint}",
                    {"host": host, "hint": hint},
                )
            if lowered in out:
                raise PydanticCustomError("host", "host '{host}' is listed twice", {"host": lowered})
            out.append(lowered)
        return out

    @model_validator(mode="after")
    def _parse(self) -> MatchRule:
        self._pattern = parse_path_pattern(self.path)
        return self

    @property
    def pattern(self) -> PathPattern:
        assert self._pattern is not None  # set by the validator of every constructed instance
        return self._pattern

    def identity(self) -> RouteIdentity:
        """What makes two routes indistinguishable to the router."""
        return (
            self.path,
            frozenset(self.methods) if self.methods is not None else None,
            frozenset(self.hosts) if self.hosts is not None else None,
        )


class Route(StrictModel):
    """A match plus exactly one action, plus optional filters (auth, limits, CORS, cache...)."""

    ACTIONS: ClassVar[tuple[str, ...]] = ("proxy", "aggregate", "endpoint", "push")

    id: str | None = Field(
        None,
        pattern=_ROUTE_ID,
        description="Unique name in logs and metrics; derived from the path when absent "
        "(`/catalog/**` becomes `catalog`).",
    )
    match: MatchRule = Field(description="Which requests this route takes.")
    proxy: ProxyAction | None = Field(None, description="Forward matching requests to a service.")
    aggregate: AggregateAction | None = Field(
        None, description="Call several services and answer with one composed response."
    )
    endpoint: EndpointAction | None = Field(None, description="Answer with a registered Python endpoint.")
    push: PushAction | None = Field(None, description="A WebSocket / Server-Sent Events push channel.")
    auth: RouteAuth | None = Field(
        None, description="Who may call this route; absent means `auth: none` unless set gateway-wide."
    )
    rate_limit: RateLimitRule | None = Field(None, description="A token-bucket rate limit.")
    cors: CorsRule | None = Field(None, description="CORS for this route (overrides the gateway's `cors`).")
    validate_request: RequestValidation | None = Field(
        None, alias="validate", description="Request body size and JSON-schema checks."
    )
    cache: CacheRule | None = Field(None, description="Cache this route's responses.")
    concurrency: ConcurrencyRule | None = Field(
        None, description="Load shedding: a bound on concurrent requests on this route."
    )

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        present = [name for name in self.ACTIONS if getattr(self, name) is not None]
        if len(present) != 1:
            names = ", ".join(self.ACTIONS)
            found = ", ".join(present) or "none"
            raise PydanticCustomError(
                "route_action",
                "a route needs exactly one action of: {names} (found: {found})",
                {"names": names, "found": found},
            )
        action = self.action
        if isinstance(action, ProxyAction | AggregateAction):
            name = self.action_name
            problems = [((name, *loc), message) for loc, message in action.bind(self.match.pattern)]
            if problems:
                raise LocatedProblemsError(problems)
        return self

    @property
    def action_name(self) -> str:
        """Which action field is set (exactly one is, by validation)."""
        for name in self.ACTIONS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("a validated route has an action")

    @property
    def action(self) -> RouteAction:
        """The route's one action."""
        action: RouteAction = getattr(self, self.action_name)
        return action

    def service_refs(self) -> list[tuple[Loc, str]]:
        """Services the action calls, each with its key path relative to the route."""
        action = self.action
        if isinstance(action, ProxyAction):
            return [(("proxy", "service"), action.service)]
        return [((self.action_name, *loc), name) for loc, name in action.service_refs()]


def derive_route_id(path: str) -> str:
    """``/catalog/**`` → ``catalog``; ``/users/{id}`` → ``users-id``; ``/`` → ``root``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-").lower()
    return slug or "root"


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What the cross-route checks need of one route; built from models, or leniently from raw
    data when other fields failed validation (so these problems are reported in the same run)."""

    index: int
    id: str | None
    services: tuple[tuple[Loc, str], ...]  # (key path relative to the route, service name)
    identity: RouteIdentity | None


def cross_check_routes(services: Collection[str], routes: Sequence[RouteFacts]) -> list[tuple[Loc, str]]:
    """Unknown services, duplicate route ids, indistinguishable routes."""
    problems: list[tuple[Loc, str]] = []
    known = ", ".join(sorted(services)) or "none defined"
    ids: dict[str, int] = {}
    identities: dict[RouteIdentity, int] = {}
    for route in routes:
        for loc, service in route.services:
            if service not in services:
                problems.append(
                    (("routes", route.index, *loc), f"unknown service '{service}' (known: {known})")
                )
        if route.id is not None:
            if route.id in ids:
                problems.append(
                    (
                        ("routes", route.index, "id"),
                        f"duplicate route id '{route.id}' (first used by routes[{ids[route.id]}])",
                    )
                )
            else:
                ids[route.id] = route.index
        if route.identity is not None:
            if route.identity in identities:
                problems.append(
                    (
                        ("routes", route.index, "match"),
                        f"same path, methods and hosts as routes[{identities[route.identity]}]; "
                        "this route could never match",
                    )
                )
            else:
                identities[route.identity] = route.index
    return problems


# --------------------------------------------------------------------------- the whole file


class GatewayConfig(StrictModel):
    """A gateway (or BFF) process: where it listens, its services and its routes."""

    version: Literal[1] = Field(1, description="Config format version; this edgeway reads version 1.")
    include: list[str] = Field(
        default_factory=list,
        description="Files merged into this one, relative to it: maps deep-merged with this file "
        "winning, `routes` concatenated (included routes first).",
    )
    name: str = Field("gateway", min_length=1, description="Service name in logs and metrics.")
    listen: Listen = Field(default_factory=Listen, description="Where clients connect.")
    admin: AdminListen | None = Field(
        default_factory=AdminListen, description="Admin API listener; `null` disables it."
    )
    workers: int = Field(1, ge=1, le=256, description="Processes sharing the listen port (SO_REUSEPORT).")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR ranges of proxies in front of the gateway (`10.0.0.0/8`, "
        "`192.0.2.7`). Only a connection from one of them keeps its `Forwarded`, `X-Forwarded-*`, "
        "`X-Real-IP`... headers (extended with its address); from anyone else they are replaced "
        "by the gateway's own. Empty: no peer is trusted.",
    )
    limits: Limits = Field(default_factory=Limits, description="Downstream (client side) limits.")
    paths: PathPolicy = Field(default_factory=PathPolicy, description="Request path normalisation.")
    access_log: AccessLog = Field(default_factory=AccessLog, description="Access log.")
    services: dict[str, Service] = Field(default_factory=dict, description="Upstream services by name.")
    routes: list[Route] = Field(default_factory=list, description="Routes; the most specific match wins.")
    auth: GatewayAuth | None = Field(
        None, description="Token verification (JWKS, issuer, audience); needed by routes with `auth`."
    )
    rate_limits: RateLimitStore = Field(
        default_factory=RateLimitStore, description="Where rate-limit buckets are kept."
    )
    cors: CorsRule | None = Field(None, description="Default CORS for every route of this gateway.")
    cache: CacheStore = Field(default_factory=CacheStore, description="Where cached responses are kept.")
    python: PythonEndpoints | None = Field(None, description="Python modules registering endpoints.")
    push: PushSettings | None = Field(None, description="Where push channels take their messages from.")
    reload: ReloadSettings = Field(default_factory=ReloadSettings, description="Live reload of this config.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise PydanticCustomError(
                    "trusted_proxy",
                    "'{entry}' is not an IP address or CIDR range (e.g. 10.0.0.0/8)",
                    {"entry": entry},
                ) from None
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, Service]) -> dict[str, Service]:
        for name in value:
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) is None:
                raise PydanticCustomError(
                    "service_name",
                    "service name '{name}' may use letters, digits, '.', '_' and '-' only",
                    {"name": name},
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _version_first(cls, data: Any) -> Any:
        # A file for another format version would fail in confusing ways further down.
        if isinstance(data, dict) and "version" in data and data["version"] != 1:
            raise PydanticCustomError(
                "config_version",
                "unsupported config version '{version}'; this edgeway reads version 1",
                {"version": data["version"]},
            )
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> GatewayConfig:
        facts = [
            RouteFacts(index, route.id, tuple(route.service_refs()), route.match.identity())
            for index, route in enumerate(self.routes)
        ]
        problems = cross_check_routes(self.services, facts)
        problems += security_problems(self.auth, self.routes)
        problems += check_python_endpoints(self.python, self.routes)
        if (
            self.admin is not None
            and self.admin.port == self.listen.port != 0
            and self.admin.host == self.listen.host
        ):
            problems.append((("admin", "port"), f"admin port {self.admin.port} is the listen port"))
        problems += [
            ((section, "port"), message) for section, message in self.port_zero_problems(self.workers)
        ]
        if problems:
            raise LocatedProblemsError(problems)
        self._assign_route_ids({route.id for route in self.routes if route.id is not None})
        return self

    def port_zero_problems(self, workers: int) -> list[tuple[str, str]]:
        """Port 0 with several workers: each would bind a different free port (SO_REUSEPORT
        shares one port only when it is named), so clients would reach one worker only."""
        if workers <= 1:
            return []
        listeners = [("listen", self.listen)] + ([("admin", self.admin)] if self.admin is not None else [])
        return [
            (section, f"port 0 (a free port) needs one worker, not {workers}: name the port")
            for section, listen in listeners
            if listen.port == 0
        ]

    def _assign_route_ids(self, taken: set[str]) -> None:
        for route in self.routes:
            if route.id is None:
                base = derive_route_id(route.match.path)
                candidate, n = base, 2
                while candidate in taken:
                    candidate, n = f"{base}-{n}", n + 1
                route.id = candidate
                taken.add(candidate)

    def route(self, route_id: str) -> Route:
        """The route with this id; KeyError names the known ids."""
        for route in self.routes:
            if route.id == route_id:
                return route
        raise KeyError(f"no route {route_id!r} (known: {', '.join(str(r.id) for r in self.routes)})")


# Pattern kinds are part of the public vocabulary of routes.
__all__ = [
    "AccessLog",
    "AdminListen",
    "GatewayConfig",
    "HeaderRules",
    "Limits",
    "Listen",
    "LocatedProblemsError",
    "MatchRule",
    "PathPolicy",
    "PatternKind",
    "Pool",
    "ProxyAction",
    "Route",
    "Service",
    "Timeouts",
    "derive_route_id",
]
