"""Config of the services behind the gateway (``services.<name>``): instances, balancer,
timeouts, connection pool, discovery and the resilience rules (breaker, retries, outlier
ejection, health checks, load shedding); and which client headers a composed call may copy onto
its service calls (``forward_headers`` of aggregate and endpoint actions).

Each resilience rule compiles to the frozen policy object of :mod:`edgeway.resilience` that the
hot path reads (``policy()``), so requests never touch pydantic.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel, broker_setting
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import ByteSize, Duration
from edgeway.gateway.filters.concurrency_config import ConcurrencyRule
from edgeway.gateway.upstream.forwarding import FORWARDING_HEADERS
from edgeway.http.upstream_tls import client_context
from edgeway.resilience.breaker import BreakerPolicy
from edgeway.resilience.budget import BudgetPolicy
from edgeway.resilience.health import HealthCheckPolicy
from edgeway.resilience.outlier import OutlierPolicy
from edgeway.resilience.retry import RetryPolicy

# --------------------------------------------------------------------------- forwarded headers

# Copied onto every call unless a list is configured, besides the identity headers the auth
# filter sets (`auth.headers`): the bearer token (absent when `auth.pass_token` is false: the
# filter strips it) and the caller's language.
BASE_FORWARD_HEADERS = ("authorization", "accept-language")
# The default of `forward_headers` as the reference describes it.
FORWARD_DEFAULT = (
    "absent: the identity headers the auth filter sets (`auth.headers`; none without `auth`), "
    "the `X-Edgeway-Client-Cert-*` headers on a listener that asks for client certificates, "
    "Authorization and Accept-Language."
)


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


def forwardable(value: list[str] | None) -> list[str] | None:
    """The `forward_headers` validator of the aggregate and endpoint actions."""
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


# --------------------------------------------------------------------------- services


def _check_instance_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise PydanticCustomError(
            "instance_url",
            "instance '{url}' must be an http:// or https:// URL like http://10.0.0.5:8000",
            {"url": url},
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise PydanticCustomError(
            "instance_url",
            "instance '{url}' needs a host and an explicit port, e.g. {scheme}://host:8000",
            {"url": url, "scheme": parts.scheme},
        )
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username or parts.password:
        raise PydanticCustomError(
            "instance_url",
            "instance '{url}' must be only scheme, host and port; rewrite paths on the route instead",
            {"url": url},
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


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


class ResponseLimits(StrictModel):
    """What a service's HTTP/1.1 response may send before the gateway answers 502 (or cuts a
    response whose head already went out). Without them an endless field was buffered to the
    service's timeout, joined piece by piece on the event loop that serves every client."""

    max_head_bytes: ByteSize = Field(
        64 * 1024,
        ge=1024,
        description="The response head: status line, fields and any `1xx` interim heads before it; "
        "also the bytes after the last body bytes before the response ends (chunk framing, "
        "trailers). Envoy's default is 60 KiB; nginx's proxy buffer 4-8 KiB.",
    )
    max_headers: int = Field(
        100, gt=0, description="Header fields in the response head (Envoy's default, 100)."
    )


class Keepalive(StrictModel):
    """HTTP/2 keepalive of the connections to each instance (`protocol: h2`): a connection that
    has received nothing for `interval` sends a PING; one whose PING is not acknowledged within
    `timeout` is closed, its calls in flight fail (502, gRPC UNAVAILABLE) and the
    next call opens a new connection. gRPC servers end a connection pinged more often than they
    allow with GOAWAY `too_many_pings` (gRPC Core's default: one ping per 5 minutes while they
    send no data): keep `interval` at 5 minutes or more against them, or configure the server."""

    interval: Duration = Field(gt=0, description="Silence on a connection before it sends a PING.")
    timeout: Duration = Field(
        20.0, gt=0, description="Time for the instance to answer the PING before the connection is closed."
    )


# --------------------------------------------------------------------------- resilience


def _unique_statuses(value: list[int]) -> list[int]:
    seen: set[int] = set()
    for status in value:
        if status in seen:
            raise PydanticCustomError("status", "status {status} is listed twice", {"status": status})
        seen.add(status)
    return value


StatusList = Annotated[list[Annotated[int, Field(ge=100, le=599)]], AfterValidator(_unique_statuses)]


class BreakerLimits(StrictModel):
    """When one circuit breaker opens, how long it stays open, and how it probes."""

    consecutive_failures: int = Field(
        5, ge=1, description="Open after this many failures in a row (catches a dead peer fast)."
    )
    failure_rate: float = Field(
        0.5, gt=0, le=1, description="Open when this share of the calls in `window` failed (a flaky peer)."
    )
    min_requests: int = Field(
        20, ge=1, description="Calls `window` must hold before `failure_rate` can open the breaker."
    )
    window: Duration = Field(10.0, gt=0, description="The rolling time window of `failure_rate`.")
    open_for: Duration = Field(
        10.0, gt=0, description="How long an open breaker refuses calls before letting probes through."
    )
    half_open_probes: int = Field(
        1, ge=1, description="Calls let through at once when half-open; all must succeed to close."
    )

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            consecutive_failures=self.consecutive_failures,
            failure_rate=self.failure_rate,
            window=float(self.window),
            min_calls=self.min_requests,
            open_for=float(self.open_for),
            half_open_probes=self.half_open_probes,
        )


class BreakerRule(StrictModel):
    """Circuit breaker per service and per instance.

    An open instance breaker takes that instance out of the balancer; an open service breaker
    answers every request to the service at once with 503 and `Retry-After`. Failures are
    gateway errors (refused, reset, timed out) and the `failure_statuses`.
    """

    instance: BreakerLimits | None = Field(
        default_factory=BreakerLimits,
        description="The breaker of each instance, fed by every attempt; `null` turns it off.",
    )
    service: BreakerLimits | None = Field(
        default_factory=BreakerLimits,
        description="The breaker of the service as a whole, fed by each request's final outcome "
        "(after retries); `null` turns it off.",
    )
    failure_statuses: StatusList = Field(
        default_factory=lambda: [500, 502, 503, 504],
        description="Upstream response statuses counted as failures.",
    )


class RetryBudgetRule(StrictModel):
    """A cap on retries as a share of requests, so retries cannot multiply an outage."""

    percent: float = Field(
        20.0, ge=0, le=100, description="Retries may add at most this percentage of the requests in `window`."
    )
    min_per_second: float = Field(
        10.0, ge=0, description="Retries allowed per second whatever the traffic (for quiet services)."
    )
    window: Duration = Field(10.0, gt=0, description="The rolling time window the budget is counted over.")


class RetryRule(StrictModel):
    """Retries where safe, on another instance, within a retry budget.

    Safe means: the request was never sent (the connection could not be opened), whatever its
    method; or it is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) without a body and failed
    with a gateway error or a `retry_on` status before any byte of the response reached the client.
    """

    attempts: int = Field(2, ge=1, le=10, description="Attempts in total, the first one included.")
    retry_on: StatusList = Field(
        default_factory=lambda: [502, 503, 504],
        description="Upstream statuses that retry an idempotent request without a body.",
    )
    backoff: Duration = Field(
        0.025, ge=0, description="Ceiling of the jittered delay before the first retry; doubles each retry."
    )
    max_backoff: Duration = Field(0.25, ge=0, description="Ceiling of any retry's delay.")
    budget: RetryBudgetRule = Field(default_factory=RetryBudgetRule, description="The retry budget.")

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryRule:
        if self.max_backoff < self.backoff:
            raise LocatedProblemsError(
                [
                    (
                        ("max_backoff",),
                        f"max_backoff ({self.max_backoff:g}s) is below backoff ({self.backoff:g}s)",
                    )
                ]
            )
        return self

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts,
            retry_on=frozenset(self.retry_on),
            backoff=float(self.backoff),
            max_backoff=float(self.max_backoff),
            budget=BudgetPolicy(
                ratio=self.budget.percent / 100,
                min_per_second=self.budget.min_per_second,
                window=float(self.budget.window),
            ),
        )


class OutlierRule(StrictModel):
    """Passive health: eject an instance that keeps failing, for a growing interval."""

    consecutive_failures: int = Field(
        5,
        ge=1,
        description="Failures in a row (gateway errors or `failure_statuses`) that eject an instance.",
    )
    failure_statuses: StatusList = Field(
        default_factory=lambda: [500, 502, 503, 504],
        description="Upstream response statuses counted as failures.",
    )
    base_ejection_time: Duration = Field(
        30.0, gt=0, description="An ejection lasts this x the number of times the instance was ejected."
    )
    max_ejection_time: Duration = Field(300.0, gt=0, description="The longest an ejection lasts.")
    max_ejection_percent: float = Field(
        50.0,
        ge=0,
        le=100,
        description="At most this share of the instances is ejected at once (at least one, never all).",
    )

    @model_validator(mode="after")
    def _times(self) -> OutlierRule:
        if self.max_ejection_time < self.base_ejection_time:
            raise LocatedProblemsError(
                [
                    (
                        ("max_ejection_time",),
                        f"max_ejection_time ({self.max_ejection_time:g}s) is below base_ejection_time "
                        f"({self.base_ejection_time:g}s)",
                    )
                ]
            )
        return self

    def policy(self) -> OutlierPolicy:
        return OutlierPolicy(
            consecutive_failures=self.consecutive_failures,
            base_ejection=float(self.base_ejection_time),
            max_ejection=float(self.max_ejection_time),
            max_ejection_percent=self.max_ejection_percent,
        )


class HealthCheckRule(StrictModel):
    """Active health: periodic checks per instance, HTTP or gRPC.

    An `http` check passes on a 2xx or 3xx answer within `timeout`; a `grpc` check (a service
    with `protocol: h2`) calls the standard `grpc.health.v1.Health/Check` and passes on `SERVING`.
    The gateway checks every instance once before it starts serving, and `/readyz` reports the
    services without an instance in the balancer (see `panic_threshold`: in panic, every instance
    is in it).
    """

    kind: Literal["http", "grpc"] = Field(
        "http",
        description="`http`: `GET path`; `grpc`: the gRPC health-checking protocol's `Check` "
        "(`grpc.health.v1.Health`), for a service with `protocol: h2`.",
    )
    grpc_service: str = Field(
        "",
        # A protobuf full name (package.Service), or "" for the server as a whole.
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?$",
        description="With `kind: grpc`, the service name asked about (`shop.v1.Orders`); empty: "
        "the server as a whole.",
    )
    path: str = Field(
        "/health/ready",
        # Visible ASCII only: it goes into a request line as is.
        pattern=r"^/[!-~]*$",
        description="Path to `GET` on each instance (the service kit's readiness endpoint by default).",
    )
    interval: Duration = Field(5.0, gt=0, description="Time between two checks of an instance.")
    timeout: Duration = Field(1.0, gt=0, description="A check without an answer in this time fails.")
    healthy_threshold: int = Field(
        2, ge=1, description="Passed checks in a row that bring an unhealthy instance back."
    )
    unhealthy_threshold: int = Field(3, ge=1, description="Failed checks in a row that take an instance out.")

    @model_validator(mode="after")
    def _timeout_fits(self) -> HealthCheckRule:
        if self.timeout > self.interval:
            raise LocatedProblemsError(
                [(("timeout",), f"timeout ({self.timeout:g}s) exceeds interval ({self.interval:g}s)")]
            )
        return self

    def policy(self) -> HealthCheckPolicy:
        return HealthCheckPolicy(
            kind=self.kind,
            grpc_service=self.grpc_service,
            path=self.path,
            interval=float(self.interval),
            timeout=float(self.timeout),
            healthy_threshold=self.healthy_threshold,
            unhealthy_threshold=self.unhealthy_threshold,
        )


# --------------------------------------------------------------------------- discovery

_DNS_NAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?\.?"
)


_NAMESERVER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+|[0-9A-Fa-f:]+)(?::\d{1,5})?")
_KV_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _check_url(value: str, schemes: tuple[str, ...], example: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise PydanticCustomError(
            "url",
            "'{value}' is not a {schemes} URL like {example}",
            {"value": value, "schemes": " or ".join(schemes), "example": example},
        )
    return value


class DnsRule(StrictModel):
    """Instances from DNS, re-resolved when the answer's TTL runs out."""

    name: str = Field(
        description="Name to resolve, e.g. `orders.shop.svc.cluster.local` (A) or "
        "`_http._tcp.orders.shop.svc.cluster.local` (SRV); always taken as fully qualified."
    )
    type: Literal["A", "SRV"] = Field(
        "A",
        description="`A`: address records (A and AAAA) on `port`; `SRV`: host and port per "
        "record (Kubernetes headless services), targets resolved to addresses.",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Instance port for `type: A` (required there; SRV records carry it).",
    )
    min_ttl: Duration = Field(
        1.0, gt=0, description="Resolve no more often than this, even when records have a shorter TTL."
    )
    max_ttl: Duration = Field(
        300.0, gt=0, description="Resolve at least this often, even when records have a longer TTL."
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description="DNS servers to ask, `ip` or `ip:port` (`[v6]:port`); empty means the "
        "system's (`/etc/resolv.conf`).",
    )
    timeout: Duration = Field(2.0, gt=0, description="One resolution, every server and retry included.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _DNS_NAME.fullmatch(value) is None:
            raise PydanticCustomError("dns_name", "'{value}' is not a DNS name", {"value": value})
        return value

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        for server in value:
            if _NAMESERVER.fullmatch(server) is None:
                raise PydanticCustomError(
                    "nameserver",
                    "nameserver '{server}' must be an IP address, optionally with :port "
                    "(e.g. 10.96.0.10 or 127.0.0.1:5353)",
                    {"server": server},
                )
        return value

    @model_validator(mode="after")
    def _port_matches_type(self) -> DnsRule:
        problems: list[tuple[Loc, str]] = []
        if self.type == "A" and self.port is None:
            problems.append((("port",), "type A needs the instances' port"))
        if self.type == "SRV" and self.port is not None:
            problems.append((("port",), "SRV records carry the port; remove `port`"))
        if self.min_ttl > self.max_ttl:
            problems.append(
                (("min_ttl",), f"min_ttl ({self.min_ttl:g}s) exceeds max_ttl ({self.max_ttl:g}s)")
            )
        if problems:
            raise LocatedProblemsError(problems)
        return self


class NatsKvRule(StrictModel):
    """Instances from the NATS KV registry the service kit's services register in."""

    url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL (comma-separate several for a cluster)."
    )
    bucket: str = Field("edgeway_registry", description="KV bucket of the registry.")
    service: str = Field(description="Service name the instances registered under.")
    meta: str | None = Field(
        None,
        description="Use the address each instance registered under this key of its meta instead "
        "of its URL: `grpc` for where a kit service serves gRPC (its `grpc://` read as `http://`), "
        "for a service that transcoding or an aggregate's gRPC calls reach.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return broker_setting(value, nats_only=True)

    @field_validator("bucket", "service", "meta")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and _KV_TOKEN.fullmatch(value) is None:
            raise PydanticCustomError(
                "kv_name", "'{value}' may only use letters, digits, - and _", {"value": value}
            )
        return value


class ConsulRule(StrictModel):
    """Instances from Consul's catalog, only those passing their health checks."""

    url: str = Field("http://127.0.0.1:8500", description="Consul HTTP API address.")
    service: str = Field(description="Service name in the Consul catalog.")
    tag: str | None = Field(None, description="Only instances with this tag.")
    datacenter: str | None = Field(None, description="Consul datacenter; absent means the agent's own.")
    token: str | None = Field(None, description="ACL token (`X-Consul-Token`); use `${ENV}` interpolation.")
    wait: Duration = Field(
        30.0, gt=0, le=600, description="How long one blocking query may wait for a change."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"), "http://127.0.0.1:8500")


class DiscoveryRule(StrictModel):
    """Where a service's instances come from besides the static list: exactly one of `dns`,
    `nats_kv`, `consul`. Discovered instances are added to `instances`; a change takes effect
    without a restart, and requests to instances that remain are never dropped."""

    dns: DnsRule | None = Field(None, description="DNS A/AAAA or SRV records, re-resolved on TTL.")
    nats_kv: NatsKvRule | None = Field(None, description="The NATS KV service registry.")
    consul: ConsulRule | None = Field(None, description="Consul catalog and health.")

    SOURCES: ClassVar[tuple[str, ...]] = ("dns", "nats_kv", "consul")

    @model_validator(mode="after")
    def _exactly_one(self) -> DiscoveryRule:
        present = [name for name in self.SOURCES if getattr(self, name) is not None]
        if len(present) != 1:
            raise PydanticCustomError(
                "discovery_source",
                "discovery needs exactly one of: dns, nats_kv, consul (found: {found})",
                {"found": ", ".join(present) or "none"},
            )
        return self

    @property
    def source(self) -> DnsRule | NatsKvRule | ConsulRule:
        found: DnsRule | NatsKvRule | ConsulRule | None = self.dns or self.nats_kv or self.consul
        assert found is not None  # exactly one, by validation
        return found


# --------------------------------------------------------------------------- TLS to instances

# Written as the listener's `min_version` is (`listen.tls`): a quoted "1.2" or "1.3".
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _readable_file(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise PydanticCustomError(
            "tls_file",
            "file '{path}' does not exist (relative paths are from the gateway's working directory {cwd})"
            if not path.exists()
            else "'{path}' is not a file",
            {"path": value, "cwd": str(Path.cwd())},
        )
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise PydanticCustomError(
            "tls_file", "cannot read '{path}': {why}", {"path": value, "why": exc.strerror or str(exc)}
        ) from None
    return value


TlsFile = Annotated[str | None, AfterValidator(_readable_file)]


class UpstreamTls(StrictModel):
    """TLS to the instances of a service (its `https://` instances; with this block, every
    instance, discovered ones included). The instance's certificate is verified, against the
    system's CAs or `ca`, and must name `server_name` or the instance's host; TLS 1.2 at least.
    A handshake that fails answers 502 with a problem naming the instance and why; the gateway
    never falls back to plaintext. Files are read at load and again on every reload (rotate a
    certificate, then `SIGHUP` or `POST /reload`); relative paths are from the gateway's
    working directory."""

    ca: TlsFile = Field(
        None,
        description="PEM bundle of the CAs that sign the instances' certificates, trusted instead of "
        "the system's CAs (`SSL_CERT_FILE` / the OS store).",
    )
    server_name: str | None = Field(
        None,
        description="The name sent as SNI and checked in every instance's certificate; absent: the "
        "instance's own host (for an IP address, the certificate must list that IP).",
    )
    cert: TlsFile = Field(
        None,
        description="Client certificate (PEM, leaf first, then intermediates) the gateway presents to "
        "instances that ask for one: mTLS between the gateway and the service.",
    )
    key: TlsFile = Field(
        None, description="The unencrypted PEM private key of `cert`; absent: `cert` holds it too."
    )
    verify: bool = Field(
        True,
        description="Verify each instance's certificate and name. `false` encrypts without knowing "
        "who answers (anyone on the path can impersonate the service): for a test bench only.",
    )
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description='The lowest TLS version offered, `"1.2"` or `"1.3"`; nothing older is possible.'
    )
    _digest: str = PrivateAttr("")

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if _DNS_NAME.fullmatch(value) is None:
                raise PydanticCustomError(
                    "server_name", "'{value}' is not a DNS name or an IP address", {"value": value}
                ) from None
        return value

    @model_validator(mode="after")
    def _usable(self) -> UpstreamTls:
        problems: list[tuple[Loc, str]] = []
        if self.key is not None and self.cert is None:
            problems.append((("key",), "a key without `cert`: set the client certificate it belongs to"))
        if not self.verify and self.ca is not None:
            problems.append((("ca",), "`ca` is unused when `verify` is false"))
        if problems:
            raise LocatedProblemsError(problems)
        problems.extend(self._load_problems())
        if problems:
            raise LocatedProblemsError(problems)
        self._digest = self._files_digest()
        return self

    def material_digest(self) -> str:
        """The content of the files as they were read at load: a reload whose YAML is unchanged
        but whose files changed (a rotated certificate) is still a change."""
        return self._digest

    def _files_digest(self) -> str:
        h = hashlib.sha256()
        for file in (self.ca, self.cert, self.key):
            if file is not None:
                try:
                    with open(file, "rb") as f:
                        h.update(f.read())
                except OSError:  # gone since it was checked: the next reload says so
                    h.update(b"\0missing")
            h.update(b"\0")
        return h.hexdigest()

    def _load_problems(self) -> list[tuple[Loc, str]]:
        """What OpenSSL says of the files, each at the key that names the file at fault."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        problems: list[tuple[Loc, str]] = []
        if self.ca is not None:
            try:
                ctx.load_verify_locations(cafile=self.ca)
            except (ssl.SSLError, OSError) as exc:
                problems.append((("ca",), f"'{self.ca}' holds no usable PEM certificate ({_why(exc)})"))
        if self.cert is None:
            return problems
        # cryptography's x509 costs ~70 ms of imports: only a config with a client certificate
        from cryptography import x509

        try:
            with open(self.cert, "rb") as f:
                certs = x509.load_pem_x509_certificates(f.read())
        except (ValueError, OSError) as exc:
            problems.append((("cert",), f"'{self.cert}' holds no PEM certificate ({exc})"))
            return problems
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            where = self.key or self.cert
            if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
                message = (
                    f"the private key in '{where}' does not match the certificate in '{self.cert}' "
                    f"({certs[0].subject.rfc4514_string() or 'no subject'})"
                )
            else:
                message = f"'{where}' holds no usable unencrypted PEM private key ({_why(exc)})"
            problems.append((("key",) if self.key is not None else ("cert",), message))
        return problems

    def context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """The client context of this service's connections, offering ``alpn`` (files read now;
        a file that changed into something unusable since the config was checked is a
        ValueError)."""
        try:
            return client_context(
                alpn=alpn,
                ca=self.ca,
                cert=self.cert,
                key=self.key,
                verify=self.verify,
                minimum=TLS_VERSIONS[self.min_version],
            )
        except OSError as exc:  # ssl.SSLError included
            files = ", ".join(f for f in (self.ca, self.cert, self.key) if f is not None)
            raise ValueError(f"cannot load the TLS files {files}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class Service(StrictModel):
    """An upstream service: one or more instances behind a load balancer."""

    instances: list[InstanceUrl] = Field(
        default_factory=list,
        description="Instance base URLs, `http://host:port` or `https://host:port` (no path); at "
        "least one unless `discovery` is set.",
    )
    balancer: Literal["round_robin", "least_outstanding"] = Field(
        "round_robin",
        description="`round_robin`, or `least_outstanding` (power of two choices on in-flight requests).",
    )
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict,
        description="Static instance weights by instance URL (one of `instances`), 1 to 1000; an "
        "instance not named (discovered ones too) weighs 1. `round_robin` becomes smooth weighted "
        "round robin, `least_outstanding` draws its two candidates by weight, sticky routes hash "
        "by weight.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    pool: Pool = Field(default_factory=Pool, description="Connection pool per instance.")
    response_limits: ResponseLimits = Field(
        default_factory=ResponseLimits, description="Limits on what the service's responses may send."
    )
    discovery: DiscoveryRule | None = Field(
        None, description="Instances from DNS, the NATS KV registry or Consul, besides `instances`."
    )
    breaker: BreakerRule | None = Field(None, description="Circuit breaker per service and instance.")
    retry: RetryRule | None = Field(None, description="Retries where safe, within a retry budget.")
    outlier_ejection: OutlierRule | None = Field(
        None, description="Passive health: take failing instances out of the balancer for a while."
    )
    health_check: HealthCheckRule | None = Field(
        None, description="Active health checks per instance (HTTP, or gRPC's health protocol)."
    )
    panic_threshold: float = Field(
        50.0,
        ge=0,
        le=100,
        description="Healthy panic threshold, in percent: when fewer of the instances than this pass "
        "their `health_check` and are not ejected (`outlier_ejection`), both are ignored and every "
        "instance takes traffic again (drained and removed ones never). 0 disables it. The default, "
        "50, is Envoy's: one instance down of two is not panic.",
    )
    concurrency: ConcurrencyRule | None = Field(
        None, description="Load shedding: a bound on concurrent requests to this service."
    )
    tls: UpstreamTls | None = Field(
        None,
        description="TLS to the instances: CA bundle, client certificate (mTLS), server name. "
        "`https://` instances use TLS without it too (system CAs, each instance's host); with it, "
        "every instance does, discovered ones included.",
    )
    protocol: Literal["http1", "h2"] = Field(
        "http1",
        description="`http1`: HTTP/1.1 on pooled connections. `h2`: HTTP/2, streams multiplexed on "
        "one connection per instance, what a gRPC service needs: cleartext with prior knowledge "
        "(h2c) to `http://` instances, TLS with ALPN `h2` to `https://` ones.",
    )
    keepalive: Keepalive | None = Field(
        None,
        description="PINGs on idle HTTP/2 connections (`protocol: h2`), to find an instance that "
        "stopped answering before a call waits out its timeout on it. Unset: none are sent.",
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
        if self.tls is not None:
            plain = [
                (
                    ("instances", index),
                    f"instance '{url}' is plaintext but the service sets `tls`: "
                    f"write https://{url.removeprefix('http://')}",
                )
                for index, url in enumerate(self.instances)
                if url.startswith("http://")
            ]
            if plain:
                raise LocatedProblemsError(plain)
        check = self.health_check
        if check is not None and check.kind == "grpc" and self.protocol != "h2":
            raise LocatedProblemsError(
                [(("health_check", "kind"), "a gRPC health check needs `protocol: h2` (gRPC is HTTP/2)")]
            )
        if self.keepalive is not None and self.protocol != "h2":
            raise LocatedProblemsError(
                [(("keepalive",), "`keepalive` pings HTTP/2 connections: it needs `protocol: h2`")]
            )
        return self

    @model_validator(mode="after")
    def _weights_name_instances(self) -> Service:
        # Compared as the instances are: normalised (an explicit port, IPv6 bracketed).
        known = set(self.instances)
        normalised: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for url, weight in self.weights.items():
            try:
                normal = _check_instance_url(url)
            except PydanticCustomError as exc:
                problems.append((("weights", url), str(exc)))
                continue
            if normal not in known:
                listed = ", ".join(self.instances) or "none"
                problems.append(
                    (("weights", url), f"'{url}' is not one of this service's instances ({listed})")
                )
            normalised[normal] = weight
        if problems:
            raise LocatedProblemsError(problems)
        self.weights = normalised
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each instance, IPv6 hosts without brackets."""
        out: list[tuple[str, int]] = []
        for url in self.instances:
            parts = urlsplit(url)  # host and port presence were checked at validation
            out.append((parts.hostname or "", parts.port or 80))
        return out

    @property
    def alpn(self) -> tuple[str, ...]:
        """What its TLS connections offer by ALPN: the one protocol the gateway speaks to it."""
        return ("h2",) if self.protocol == "h2" else ("http/1.1",)

    def tls_context(self) -> ssl.SSLContext | None:
        """The client context of this service's TLS connections when it configures `tls`
        (files read now); None: its `https://` instances use the default one."""
        return self.tls.context(self.alpn) if self.tls is not None else None
