"""The gateway config, assembled: a route (``Route``) and the whole file (``GatewayConfig``), from
the models each part of the gateway owns next to its code (``filters/auth/config.py``,
``actions/proxy_config.py``, ``upstream/config.py``...). Every field is described; the reference
is generated from these descriptions by ``scripts/gen_config_reference.py``.

Shape of a route, and how it grows: a route is a ``match`` block plus exactly one *action* (a
sibling field named in ``Route.ACTIONS``: ``proxy``, ``aggregate``, ``endpoint``, ``push``,
``transcode``), plus
optional per-route *filter* blocks (``auth``, ``client_cert``, ``rate_limit``, ``cors``,
``validate``, ``cache``, ``concurrency``). A new action or filter adds its model next to its code
and one typed field here; nothing about the existing fields has to move for that.

Checks that need more than one field (a route's service exists, route ids are unique, two routes
are not identical, a rewrite only uses the path's parameters) live in model validators that
raise :class:`LocatedProblemsError`, so that each problem keeps its own key path and every one of
them is reported, not just the first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.actions.aggregate.config import AggregateAction
from edgeway.gateway.actions.endpoints.config import EndpointAction, PythonEndpoints, check_python_endpoints
from edgeway.gateway.actions.proxy_config import ProxyAction
from edgeway.gateway.actions.push.config import PushAction, PushSettings
from edgeway.gateway.actions.transcode.config import TranscodeAction
from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.core.config import AccessLog, MatchRule, PathPolicy, RouteIdentity
from edgeway.gateway.filters.auth.config import GatewayAuth, RouteAuth, auth_problems
from edgeway.gateway.filters.cache.config import CacheRule, CacheStore
from edgeway.gateway.filters.client_cert_config import ClientCertRule
from edgeway.gateway.filters.concurrency_config import ConcurrencyRule
from edgeway.gateway.filters.cors_config import CorsRule
from edgeway.gateway.filters.ratelimit.config import RateLimitRule, RateLimitStore
from edgeway.gateway.filters.validation_config import RequestValidation
from edgeway.gateway.process.config import AdminListen, Limits, Listen, ReloadSettings
from edgeway.gateway.telemetry.config import TelemetrySettings
from edgeway.gateway.tls.config import HttpRedirect
from edgeway.gateway.traffic.config import traffic_problems
from edgeway.gateway.traffic.strangler_config import StranglerStore
from edgeway.gateway.upstream.config import Service

_ROUTE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
RouteAction = ProxyAction | AggregateAction | EndpointAction | PushAction | TranscodeAction


class Route(StrictModel):
    """A match plus exactly one action, plus optional filters (auth, limits, CORS, cache...)."""

    ACTIONS: ClassVar[tuple[str, ...]] = ("proxy", "aggregate", "endpoint", "push", "transcode")

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
    transcode: TranscodeAction | None = Field(
        None, description="Answer JSON requests by calling a gRPC method (JSON-to-gRPC transcoding)."
    )
    auth: RouteAuth | None = Field(
        None, description="Who may call this route; absent means `auth: none` unless set gateway-wide."
    )
    client_cert: ClientCertRule | None = Field(
        None,
        description="Which client certificates may call this route (needs `listen.tls.client_certificates`).",
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
        if isinstance(action, ProxyAction | AggregateAction | TranscodeAction):
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
            return [(("proxy", *loc), name) for loc, name in action.service_refs()]
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


def _http2_problems(services: Mapping[str, Service], routes: Sequence[Route]) -> list[tuple[Loc, str]]:
    """A service reached over HTTP/2 (``protocol: h2``) is served by the plain proxy only: the
    traffic-shifting proxy, WebSockets, aggregates and Python endpoints speak HTTP/1.1 upstream."""
    problems: list[tuple[Loc, str]] = []
    for index, route in enumerate(routes):
        plain = route.proxy is not None and not route.proxy.shifts_traffic and not route.proxy.websocket
        if route.proxy is not None and route.proxy.grpc_web:
            problems += [
                (
                    ("routes", index, "proxy", "grpc_web"),
                    f"gRPC-Web is translated to gRPC: service '{name}' needs `protocol: h2`",
                )
                for _, name in route.service_refs()
                if (svc := services.get(name)) is not None and svc.protocol != "h2"
            ]
        if plain:
            continue
        for loc, name in route.service_refs():
            svc = services.get(name)
            if svc is not None and svc.protocol == "h2":
                problems.append(
                    (
                        ("routes", index, *loc),
                        f"service '{name}' has `protocol: h2`: only a plain proxy route (no split, "
                        "canary, sticky, mirror or websocket) can send to it so far",
                    )
                )
    return problems


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
    strangler_store: StranglerStore = Field(
        default_factory=StranglerStore,
        description="Where strangler rules keep their step (shared by the gateways that must agree on it).",
    )
    cors: CorsRule | None = Field(None, description="Default CORS for every route of this gateway.")
    cache: CacheStore = Field(default_factory=CacheStore, description="Where cached responses are kept.")
    python: PythonEndpoints | None = Field(None, description="Python modules registering endpoints.")
    push: PushSettings | None = Field(None, description="Where push channels take their messages from.")
    reload: ReloadSettings = Field(default_factory=ReloadSettings, description="Live reload of this config.")
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="The gateway's metrics (admin `/metrics`) and OpenTelemetry traces.",
    )

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
        problems += auth_problems(self.auth, self.routes)
        problems += traffic_problems(self.auth, self.routes)
        if self.workers > 1 and self.strangler_store.backend == "memory":
            problems += [
                (
                    ("routes", index, "proxy", "strangler"),
                    f"with {self.workers} workers a strangler needs a shared store, for the workers to "
                    "agree on its step: set strangler_store.backend to `file` (with a `path`) or `redis`",
                )
                for index, route in enumerate(self.routes)
                if route.proxy is not None and route.proxy.strangler is not None
            ]
        problems += check_python_endpoints(self.python, self.routes)
        problems += _http2_problems(self.services, self.routes)
        tls = self.listen.tls
        if tls is None or tls.client_certificates is None:
            problems += [
                (
                    ("routes", index, "client_cert"),
                    "a route's 'client_cert' needs 'listen.tls.client_certificates' (the listener must "
                    "ask clients for certificates)",
                )
                for index, route in enumerate(self.routes)
                if route.client_cert is not None
            ]
        if (
            self.admin is not None
            and self.admin.port == self.listen.port != 0
            and self.admin.host == self.listen.host
        ):
            problems.append((("admin", "port"), f"admin port {self.admin.port} is the listen port"))
        redirect = self.listen.http_redirect
        if (
            self.admin is not None
            and redirect is not None
            and self.admin.port == redirect.port != 0
            and self.admin.host == self.listen.redirect_host
        ):
            problems.append(
                (("admin", "port"), f"admin port {self.admin.port} is the port of listen.http_redirect")
            )
        problems += [
            ((*section.split("."), "port"), message)
            for section, message in self.port_zero_problems(self.workers)
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
        listeners: list[tuple[str, Listen | AdminListen | HttpRedirect]] = [("listen", self.listen)]
        if self.listen.http_redirect is not None:
            listeners.append(("listen.http_redirect", self.listen.http_redirect))
        if self.admin is not None:
            listeners.append(("admin", self.admin))
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


__all__ = [
    "GatewayConfig",
    "LocatedProblemsError",
    "Route",
    "RouteAction",
    "RouteFacts",
    "cross_check_routes",
    "derive_route_id",
]
