"""Service settings: pydantic-settings from the environment and an optional YAML/JSON file.

Precedence, highest first: keyword arguments, environment variables (``EDGEWAY_*``, nested
fields with ``__``), a ``.env`` file, the settings file, the defaults. The settings file is the
``file`` argument of :meth:`ServiceSettings.load`, else ``$EDGEWAY_SETTINGS_FILE``. A service
subclasses :class:`ServiceSettings` to add its own fields; they get the same sources.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import pydantic
from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from edgeway.service.errors import SettingsError
from edgeway.service.tls import settings_problems

__all__ = ["ServiceSettings"]

_settings_file: ContextVar[Path | None] = ContextVar("edgeway_settings_file", default=None)


class ServiceSettings(BaseSettings):
    """What every edgeway service can be told at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="EDGEWAY_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    # identity of this process
    service_name: str = ""
    instance_id: str = Field(default="", description="unique per process; random when empty")
    advertise_url: str | None = Field(
        default=None, description="URL other services use to reach this instance; registers it when set"
    )
    log_level: str = "info"
    host: str = Field(default="127.0.0.1", description="address the service binds (Service.run)")
    port: int = Field(default=8000, ge=1, le=65535, description="port the service binds (Service.run)")
    data_dir: Path = Field(
        default=Path(".edgeway-data"), description="where the default SQLite database and caches are kept"
    )

    # backing services of a Service (edgeway.service.Service): its database and event bus
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL of the service's database; default "
        "sqlite+aiosqlite:///<data_dir>/<service>.db (postgresql+asyncpg://... for PostgreSQL)",
    )
    bus_url: str | None = Field(
        default=None, description="the event bus's broker: nats://... (default: nats_url) or amqp://..."
    )
    bus_prefix: str = Field(default="edgeway", description="prefix of the bus's streams/exchanges")
    bus_replicas: int = Field(
        default=1,
        ge=1,
        description="NATS stream replicas of the channels the service declares: 3 on a cluster",
    )
    kv_replicas: int | None = Field(
        default=None,
        ge=1,
        description="NATS replicas of the KV buckets (registry, config) the service creates; "
        "default: bus_replicas",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite's synchronous pragma for the service's database (WAL mode): NORMAL is faster "
        "but may lose the last commits at a power cut",
    )
    run_relay: bool = Field(
        default=True, description="publish this instance's outbox (one relay per SQLite file)"
    )

    # NATS: config store, flags, registry
    nats_url: str = "nats://127.0.0.1:4222"
    config_bucket: str | None = Field(
        default=None, description="NATS KV bucket holding this service's config"
    )
    config_cache_dir: Path = Path(".edgeway-cache")
    config_retries: int = 3
    flags_bucket: str | None = None
    registry_bucket: str | None = Field(default=None, description="NATS KV bucket of the service registry")
    registry_ttl: float = 15.0

    # identity of callers
    jwks_url: str | None = None
    token_issuer: str | None = None
    token_audience: str | None = None
    token_types: list[str] | None = Field(
        default_factory=lambda: ["at+jwt"],
        description="accepted token header typ values (RFC 9068 access tokens: at+jwt); null: not checked",
    )
    revocations_url: str | None = Field(
        default=None,
        description="the security service's revocation feed (GET /revocations), polled so revoked tokens "
        "are refused; default: the /revocations next to jwks_url when that ends in /.well-known/jwks.json; "
        "'' to turn revocation checks off",
    )
    revocation_poll_interval: float = Field(default=2.0, gt=0, description="seconds between polls of it")
    trust_gateway_headers: bool = False

    # other services
    services: dict[str, list[str]] = Field(
        default_factory=dict, description="static discovery: service name → instance URLs"
    )
    dns_discovery: bool = Field(default=False, description="also resolve service names by DNS SRV/A")
    dns_domain: str | None = Field(default=None, description="appended to bare names for DNS, e.g. shop.svc")
    discovery_cache_ttl: float = 5.0
    discovery_max_stale: float = Field(
        default=60.0,
        ge=0,
        description="seconds past discovery_cache_ttl the last known instances are still used while "
        "discovery fails (a registry lookup timing out during a NATS leader change); 0 turns it off",
    )
    client_timeout: float = 5.0
    client_retries: int = 2

    # gRPC (edgeway.service.grpc): served beside the HTTP app, in the same process
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="port the service serves gRPC on (its servicers, health checking, reflection) beside "
        "HTTP; 0: no gRPC",
    )
    grpc_host: str | None = Field(default=None, description="address gRPC binds; unset: host")
    grpc_advertise_url: str | None = Field(
        default=None,
        description="grpc://host:port (grpcs:// over TLS) peers reach this instance's gRPC at, registered "
        "with it; unset: advertise_url's host with grpc_port",
    )
    grpc_reflection: bool = Field(
        default=True, description="serve gRPC server reflection (grpcurl, Postman list the services)"
    )
    grpc_services: dict[str, list[str]] = Field(
        default_factory=dict,
        description="static discovery of other services' gRPC: service name → grpc://host:port "
        "(grpcs:// for TLS)",
    )

    # TLS (edgeway.service.tls): serving HTTPS, and the kit's own calls to TLS peers
    tls_cert: Path | None = Field(
        default=None,
        description="certificate chain (PEM, leaf first) the service serves HTTPS with (Service.run); "
        "unset: plain HTTP",
    )
    tls_key: Path | None = Field(
        default=None, description="the unencrypted PEM private key of tls_cert; unset: tls_cert holds it"
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="CA bundle (PEM) client certificates are verified against; set: clients are asked "
        "for one, and a verified one is available to endpoints (edgeway.service.tls.ClientCertificate)",
    )
    tls_client_cert_required: bool = Field(
        default=False,
        description="refuse a client without a certificate signed by tls_client_ca (mTLS: only the gateway "
        "and peers holding one get in)",
    )
    tls_ca: Path | None = Field(
        default=None,
        description="CA bundle (PEM) the kit's calls to other services, JWKS and revocations trust, "
        "instead of the system's CAs",
    )
    tls_client_cert: Path | None = Field(
        default=None,
        description="certificate chain (PEM) the kit's calls present to peers that ask for one (mTLS)",
    )
    tls_client_key: Path | None = Field(
        default=None, description="the unencrypted PEM private key of tls_client_cert; unset: it holds it"
    )

    # browsers calling the service directly (the Direct pattern)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed to call this service from a browser (CORS); '*' for any; "
        "empty: no CORS headers (behind a gateway the gateway answers CORS)",
    )

    # process
    gc_freeze: bool = Field(
        default=True,
        description="after start-up, collect once and move every surviving object out of the garbage "
        "collector's reach (gc.freeze), so later collections do not walk the start-up heap",
    )

    # shutdown
    shutdown_grace: float = Field(
        default=0.0, description="seconds to keep serving after readiness turns false at shutdown"
    )

    @pydantic.model_validator(mode="after")
    def _tls_usable(self) -> Self:
        problems = settings_problems(self)
        if self.grpc_port and self.grpc_port == self.port and (self.grpc_host or self.host) == self.host:
            problems.append(f"grpc_port {self.grpc_port} is the HTTP port too: give gRPC a port of its own")
        for url in (self.grpc_advertise_url, *(u for urls in self.grpc_services.values() for u in urls)):
            if url is not None and not url.startswith(("grpc://", "grpcs://")):
                problems.append(f"{url!r} is not a gRPC address: write grpc://host:port (grpcs:// for TLS)")
        if self.tls_cert is not None and (self.grpc_advertise_url or "").startswith("grpc://"):
            problems.append(
                f"grpc_advertise_url {self.grpc_advertise_url} is grpc:// but the service serves TLS "
                "(tls_cert): advertise grpcs://"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def database(self, service: str) -> str:
        """The database URL of ``service`` (see ``database_url``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def bucket_replicas(self) -> int:
        """Replicas of the KV buckets the service creates (see ``kv_replicas``)."""
        return self.kv_replicas if self.kv_replicas is not None else self.bus_replicas

    def broker(self) -> str:
        """The event bus's broker URL (see ``bus_url``)."""
        return self.bus_url or self.nats_url

    def grpc_url(self) -> str | None:
        """Where peers reach this instance's gRPC (see ``grpc_advertise_url``); None without gRPC
        or without an address to advertise."""
        if not self.grpc_port:
            return None
        if self.grpc_advertise_url:
            return self.grpc_advertise_url
        if not self.advertise_url:
            return None
        host = urlsplit(self.advertise_url).hostname
        if not host:
            return None
        shown = f"[{host}]" if ":" in host else host
        return f"{'grpcs' if self.tls_cert is not None else 'grpc'}://{shown}:{self.grpc_port}"

    def revocation_feed(self) -> str | None:
        """The revocation feed to poll, or None (see ``revocations_url``)."""
        if self.revocations_url is not None:
            return self.revocations_url or None
        suffix = "/.well-known/jwks.json"
        if self.jwks_url and self.jwks_url.endswith(suffix):
            return self.jwks_url[: -len(suffix)] + "/revocations"
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        path = _settings_file.get()
        if path is not None:
            # YAML is a superset of JSON, so one source reads both.
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        sources.append(file_secret_settings)
        return tuple(sources)

    @classmethod
    def load(cls, file: str | Path | None = None, **overrides: Any) -> Self:
        """Build the settings from env and ``file`` (or ``$EDGEWAY_SETTINGS_FILE``)."""
        raw = file if file is not None else os.environ.get("EDGEWAY_SETTINGS_FILE")
        path = Path(raw) if raw else None
        if path is not None and not path.is_file():
            raise SettingsError(f"settings file {path} does not exist or is not a file")
        try:
            with _using_file(path):
                return cls(**overrides)
        except pydantic.ValidationError as exc:
            where = f" (file {path} and environment)" if path else " (environment)"
            raise SettingsError(f"invalid settings{where}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from exc


@contextmanager
def _using_file(path: Path | None) -> Iterator[None]:
    token = _settings_file.set(path)
    try:
        yield
    finally:
        _settings_file.reset(token)
