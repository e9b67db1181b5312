"""Config of resilience at the edge: breakers, retries, outlier ejection, active health checks,
load shedding, service discovery and live reload.

Owned by the resilience and discovery work (issue 6); fields grow here without touching
``schema.py``.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration


class BreakerRule(StrictModel):
    """Circuit breaker per service and per instance."""


class RetryRule(StrictModel):
    """Retries where safe, on another instance, within a retry budget."""


class OutlierRule(StrictModel):
    """Passive health: eject an instance that keeps failing, for a growing interval."""


class HealthCheckRule(StrictModel):
    """Active health: periodic HTTP checks per instance."""


class ConcurrencyRule(StrictModel):
    """Load shedding: a bound on concurrent requests; beyond it 503 with Retry-After."""


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

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        for part in value.split(","):
            _check_url(part.strip(), ("nats", "tls"), "nats://127.0.0.1:4222")
        return value

    @field_validator("bucket", "service")
    @classmethod
    def _token(cls, value: str) -> str:
        if _KV_TOKEN.fullmatch(value) is None:
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


# --------------------------------------------------------------------------- live reload


class ReloadSettings(StrictModel):
    """Live reload of this config: file watch, SIGHUP, admin `POST /reload`. `listen`, `admin`,
    `workers` and `limits` need a restart; a reload that changes them is refused."""

    watch: bool = Field(
        True,
        description="Poll the config file (and the files it includes) and reload when their content changes.",
    )
    interval: Duration = Field(2.0, gt=0, description="How often the files are polled.")
    drain_timeout: Duration = Field(
        30.0,
        ge=0,
        description="After a reload, requests still running on the old config get this long "
        "before its components (JWKS client, discovery...) are stopped.",
    )
