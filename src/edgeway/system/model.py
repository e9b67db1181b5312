"""The system file's model: what runs (services, edges), what they need (the broker, the stores),
and how many of each.

One file, ``edgeway.system.yaml``, describes a whole system. ``edgeway demo`` runs it on one
machine; ``edgeway deploy render`` turns the same file into Kubernetes manifests or a compose
file. Nothing here names a host: where a process is reached depends on where it runs, and is
worked out per target (:mod:`edgeway.system.wiring`). Ports are the ones the processes listen on;
on one machine an instance *i* of a service listens on ``port + i - 1``.

Validated like a gateway config (strict types, unknown keys refused, every problem reported with
file, line, column and key path); the checks across fields are in :mod:`edgeway.system.loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from edgeway import __version__
from edgeway.gateway.config.base import LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc

__all__ = [
    "Broker",
    "Edge",
    "Health",
    "Kind",
    "Nats",
    "Pattern",
    "Postgres",
    "RabbitMq",
    "Redis",
    "Resources",
    "Service",
    "Stores",
    "System",
]

Pattern = Literal["all", "direct", "gateway", "bff"]
Kind = Literal["kit", "security", "plain"]

# A process name becomes a Kubernetes object name, a DNS label and part of an environment
# variable: lower-case letters, digits and inner hyphens, short enough for the suffixes the
# renderers add ("-public").
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
_CPU = re.compile(r"\d+(\.\d+)?m?")
_MEMORY = re.compile(r"\d+(\.\d+)?([KMGT]i?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PREFIX = re.compile(r"[A-Z][A-Z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PATH = re.compile(r"/[!-~]*")


def _check(pattern: re.Pattern[str], kind: str, what: str) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise PydanticCustomError(kind, "'{value}' is not {what}", {"value": value, "what": what})
        return value

    return AfterValidator(check)


Name = Annotated[
    str, _check(_NAME, "name", "a name: lower-case letters, digits and inner '-', at most 40 characters")
]
CpuQuantity = Annotated[str, _check(_CPU, "cpu", "a CPU quantity such as 250m or 1")]
MemoryQuantity = Annotated[str, _check(_MEMORY, "memory", "a memory quantity such as 256Mi or 1Gi")]
EnvName = Annotated[str, _check(_ENV_NAME, "env_name", "an environment variable name")]
HttpPath = Annotated[str, _check(_PATH, "http_path", "an absolute URL path such as /health/ready")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _env_names(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if _ENV_NAME.fullmatch(name) is None:
            raise PydanticCustomError(
                "env_name", "'{name}' is not an environment variable name", {"name": name}
            )
    return env


Env = Annotated[dict[str, str], AfterValidator(_env_names)]


class Health(StrictModel):
    """Where a process says it is alive and ready (HTTP GET answering 200), on its port."""

    ready: HttpPath = Field(description="Ready for traffic: the readiness probe, what the demo waits for.")
    live: HttpPath = Field(description="Alive: the liveness probe; a process failing it is restarted.")


class Amount(StrictModel):
    cpu: CpuQuantity
    memory: MemoryQuantity


class Resources(StrictModel):
    """What one instance asks of a node (requests) and may use at most (limits)."""

    requests: Amount = Field(default_factory=lambda: Amount(cpu="100m", memory="128Mi"))
    limits: Amount = Field(default_factory=lambda: Amount(cpu="1", memory="512Mi"))


class Service(StrictModel):
    """A service of the system: a Python module (or a command) run as ``instances`` processes."""

    kind: Kind = Field(
        "kit",
        description="`kit`: built on the service kit (edgeway.service), given the broker, registry, "
        "config bucket and the security service's JWKS; `security`: the security service "
        "(EDGEWAY_SECURITY_* settings, the signing keys); `plain`: given only its port and `env`.",
    )
    module: Annotated[str, _check(_MODULE, "module", "a Python module name")] | None = Field(
        None, description="Run as `python -m MODULE`."
    )
    command: list[str] | None = Field(None, description="Run this command instead of a module.")
    path: str | None = Field(
        None,
        description="Its project folder, relative to the system file, for a service not installed "
        "in edgeway's environment (one `edgeway new service` made): the demo runs it with the "
        "folder's `src/` on the Python path; its Dockerfile builds `image`.",
    )
    image: str | None = Field(
        None,
        description="The OCI image it runs on a cluster and in compose (built from its own "
        "Dockerfile); default: the system's `image`.",
    )
    port: Port = Field(description="The port it listens on (instance i on one machine: port + i - 1).")
    grpc_port: Port | None = Field(
        None,
        description="It also serves gRPC, on this port (instance i on one machine: grpc_port + i - 1): "
        "given to a `kit` service as EDGEWAY_GRPC_PORT; on a cluster its Service gets a port named "
        "`grpc`, which DNS discovery (SRV `_grpc._tcp`) finds.",
    )
    instances: int = Field(1, ge=1, le=100, description="Processes of it; replicas on a cluster.")
    max_instances: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="A cluster's autoscaler grows it up to this many (default: three times `instances`); "
        "only for `stateless` services.",
    )
    stateless: bool = Field(
        True,
        description="It keeps no state of its own between requests (its database is elsewhere): a "
        "cluster may add and remove instances of it at will.",
    )
    database: Name | None = Field(
        None,
        description="Its own database: a SQLite file of this name on one machine, a PostgreSQL "
        "database of this name (stores.postgres) on a cluster.",
    )
    health: Health | None = Field(
        None,
        description="Probe paths; default for `kit`: /health/ready and /health/live, for "
        "`security`: /healthz. Required for `plain`.",
    )
    after: list[Name] | None = Field(
        None,
        description="Services (or `broker`) that must be ready before it starts on one machine; "
        "default for `kit`: the broker and the security service, `security`: the broker.",
    )
    env: Env = Field(default_factory=dict, description="Extra environment, every target.")
    deploy_env: Env = Field(
        default_factory=dict, description="Extra environment on a cluster and in compose only (over `env`)."
    )
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _consistent(self) -> Service:
        problems: list[tuple[Loc, str]] = []
        if (self.module is None) == (self.command is None):
            problems.append(((), "give exactly one of `module` (python -m MODULE) or `command`"))
        if self.command is not None and not self.command:
            problems.append((("command",), "the command is empty"))
        if self.kind == "plain" and self.health is None:
            problems.append(
                (("health",), "a `plain` service needs `health: {ready: PATH, live: PATH}` (HTTP 200 paths)")
            )
        if self.max_instances is not None and self.max_instances < self.instances:
            problems.append(
                (
                    ("max_instances",),
                    f"max_instances ({self.max_instances}) is below instances ({self.instances})",
                )
            )
        if self.max_instances is not None and not self.stateless:
            problems.append((("max_instances",), "only a stateless service is autoscaled"))
        if problems:
            raise LocatedProblemsError(problems)
        return self

    def probes(self) -> Health:
        if self.health is not None:
            return self.health
        if self.kind == "security":
            return Health(ready="/healthz", live="/healthz")
        return Health(ready="/health/ready", live="/health/live")

    def ceiling(self) -> int:
        """The most instances a cluster's autoscaler may run."""
        return self.max_instances if self.max_instances is not None else self.instances * 3


class Edge(StrictModel):
    """A gateway or a BFF: ``edgeway gateway`` with a config file, the only way in from outside."""

    config: str = Field(description="Its gateway config file, relative to the system file.")
    pattern: Literal["gateway", "bff"] = Field(
        description="`gateway`: one API for every client; `bff`: one edge per client type."
    )
    port: Port = Field(description="Where clients reach it.")
    admin_port: Port = Field(description="Its admin API: /healthz, /readyz, /metrics, reload.")
    instances: int = Field(1, ge=1, le=100)
    max_instances: int | None = Field(None, ge=1, le=1000, description="Autoscaler ceiling (default 3x).")
    env: Env = Field(default_factory=dict, description="Extra environment, every target.")
    deploy_env: Env = Field(
        default_factory=dict, description="Extra environment on a cluster and in compose."
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(
            requests=Amount(cpu="250m", memory="128Mi"), limits=Amount(cpu="2", memory="512Mi")
        )
    )

    @model_validator(mode="after")
    def _ports(self) -> Edge:
        problems: list[tuple[Loc, str]] = []
        if self.port == self.admin_port:
            problems.append((("admin_port",), "the admin API needs a port of its own"))
        if self.max_instances is not None and self.max_instances < self.instances:
            problems.append((("max_instances",), "max_instances is below instances"))
        if problems:
            raise LocatedProblemsError(problems)
        return self

    def ceiling(self) -> int:
        return self.max_instances if self.max_instances is not None else self.instances * 3


class Nats(StrictModel):
    """NATS with JetStream: events (unless `rabbitmq`), the config and flags bucket, the registry."""

    port: Port = Field(
        14222, description="The demo's embedded nats-server port (not 4222, which a system NATS often has)."
    )
    external_url: str | None = Field(
        None,
        description="Use this NATS (comma-separated for a cluster) instead of running one: the demo "
        "starts no embedded server and a cluster no StatefulSet.",
    )
    cluster_size: Literal[1, 3, 5] = Field(
        3, description="Nodes of the cluster's NATS StatefulSet; streams and buckets keep this many replicas."
    )
    storage: MemoryQuantity = Field("10Gi", description="JetStream storage per node (a volume claim).")


class RabbitMq(StrictModel):
    url: str = Field(description="amqp:// URL of the RabbitMQ that carries the events.")


class Broker(StrictModel):
    """The message broker: NATS (embedded on one machine, a 3-node cluster on Kubernetes) and,
    optionally, RabbitMQ for the events."""

    nats: Nats = Field(default_factory=Nats)
    rabbitmq: RabbitMq | None = Field(
        None, description="Events over RabbitMQ instead of NATS JetStream (NATS still holds the buckets)."
    )
    prefix: str = Field("edgeway", description="Prefix of the streams (or exchanges) every process uses.")
    config_bucket: str | None = Field(
        None, description="NATS KV bucket of the services' config and feature flags."
    )
    registry_bucket: str | None = Field(
        None, description="NATS KV bucket of the service registry (on one machine; a cluster uses DNS)."
    )


class Postgres(StrictModel):
    """PostgreSQL: on a cluster, each service with a `database` gets a database of that name."""

    external: str | None = Field(
        None,
        description="Host name or IP address of a PostgreSQL outside the cluster (an ExternalName "
        "Service, or an EndpointSlice for an address); absent: a one-node StatefulSet.",
    )
    port: Port = 5432
    user: str = Field("edgeway", description="The role the services connect as (its password is a Secret).")
    storage: MemoryQuantity = Field("10Gi", description="The StatefulSet's volume claim.")


class Redis(StrictModel):
    """Redis, shared by the edges (rate-limit buckets, the response cache) when they are scaled out."""

    external: str | None = Field(None, description="Host name or IP address of a Redis outside the cluster.")
    port: Port = 6379


class Stores(StrictModel):
    postgres: Postgres | None = None
    redis: Redis | None = None


class System(StrictModel):
    """One system: its services, its edges, its broker and its stores."""

    system: Name = Field(description="The system's name: the Kubernetes namespace, the compose project.")
    env_prefix: Annotated[str, _check(_PREFIX, "env_prefix", "an upper-case variable prefix")] | None = Field(
        None,
        description="Prefix of the wiring variables every process gets (<PREFIX>_URL_<NAME>, "
        "<PREFIX>_PORT_<NAME>, <PREFIX>_HOST); default: the name upper-cased.",
    )
    image: str = Field(
        default_factory=lambda: f"edgeway:{__version__}",
        description="The OCI image every edgeway process runs on a cluster (deploy/Dockerfile); "
        "default: edgeway:<this version>.",
    )
    pattern: Pattern = Field(
        "all",
        description="Which edges run and what is exposed: `gateway` or `bff` (only those edges are "
        "reachable from outside), `direct` (no edges: every service is), `all` (side by side).",
    )
    broker: Broker = Field(default_factory=Broker)
    stores: Stores = Field(default_factory=Stores)
    services: dict[Name, Service] = Field(description="The services, in start order.")
    edges: dict[Name, Edge] = Field(default_factory=dict, description="The gateways and BFFs.")

    @property
    def prefix(self) -> str:
        return self.env_prefix or self.system.upper().replace("-", "_")

    def edges_of(self, pattern: Pattern) -> list[str]:
        """The edges a pattern runs, in file order."""
        if pattern == "all":
            return list(self.edges)
        return [name for name, edge in self.edges.items() if edge.pattern == pattern]

    @staticmethod
    def services_exposed(pattern: Pattern) -> bool:
        """In the Direct pattern (and side by side with it, ``all``) clients call services directly."""
        return pattern in ("direct", "all")

    def security_services(self) -> list[str]:
        return [name for name, service in self.services.items() if service.kind == "security"]
