"""Where each process of a system is reached, and the environment that tells it so, per target.

The system file names no hosts. A target — the demo on one machine, a Kubernetes cluster, a
compose project — decides where processes listen and how they find each other (a
:class:`Placement`); from it every process gets the same kinds of variables:

- the wiring every config file may interpolate: ``<PREFIX>_HOST`` (the address to listen on),
  ``<PREFIX>_PORT_<NAME>`` (each named port), ``<PREFIX>_URL_<NAME>`` (the base URL at which
  each process, the broker and the stores are reached: ``SHOP_URL_LEGACY``, ``SHOP_URL_NATS``);
- the service kit's settings (``EDGEWAY_*``: broker, registry or DNS discovery, config bucket,
  JWKS, database) for `kit` services, the security service's (``EDGEWAY_SECURITY_*``) for it;
- the service's own ``env`` (and ``deploy_env`` off the demo).

So an edge config that says ``instances: ["${SHOP_URL_LEGACY:-http://127.0.0.1:8108}"]`` runs
unchanged on a laptop and in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from edgeway.system.loader import instance_names, process_ports
from edgeway.system.model import System

__all__ = ["Placement", "edge_env", "env_key", "local_placement", "service_env", "wiring_env"]

Target = Literal["demo", "kubernetes", "compose"]


def env_key(prefix: str, kind: str, name: str) -> str:
    """``env_key("SHOP", "URL", "web-bff")`` → ``SHOP_URL_WEB_BFF``."""
    return f"{prefix}_{kind}_{name.upper().replace('-', '_')}"


@dataclass(frozen=True)
class Placement:
    """How one target places the processes of a system."""

    target: Target
    bind_host: str  # what every process listens on
    urls: Mapping[str, str]  # process, instance, broker or store name → base URL others reach it at
    ports: Mapping[str, int]  # named ports (<PREFIX>_PORT_<NAME>)
    nats_url: str
    data_dir: str
    discovery: Literal["registry", "dns", "env"]
    bus_replicas: int = 1
    dns_domain: str | None = None
    database_url: Callable[[str], str] | None = None  # database name → URL; None: SQLite files
    keys_path: str | None = None  # the security service's signing keys
    cors_origins: list[str] = field(default_factory=list)
    shutdown_grace: float | None = None
    registry_ttl: float | None = None
    log_level: str = "info"

    def url(self, name: str) -> str:
        return self.urls[name]


def wiring_env(system: System, placement: Placement) -> dict[str, str]:
    """The variables every process gets: where to listen, each port, each base URL."""
    prefix = system.prefix
    env = {f"{prefix}_HOST": placement.bind_host}
    env.update({env_key(prefix, "PORT", name): str(port) for name, port in placement.ports.items()})
    env.update({env_key(prefix, "URL", name): url for name, url in placement.urls.items()})
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "EDGEWAY_LOG_LEVEL": placement.log_level,
            "EDGEWAY_HOST": placement.bind_host,
            "EDGEWAY_DATA_DIR": placement.data_dir,
            "EDGEWAY_NATS_URL": placement.nats_url,
            "EDGEWAY_BUS_PREFIX": system.broker.prefix,
        }
    )
    return env


def _bus_url(system: System, placement: Placement) -> str:
    return system.broker.rabbitmq.url if system.broker.rabbitmq is not None else placement.nats_url


def service_env(
    system: System, placement: Placement, name: str, instance: str, port: int, grpc_port: int | None = None
) -> dict[str, str]:
    """The environment of one instance of a service (wiring, its kind's settings, its own env);
    ``grpc_port``: where the instance serves gRPC, default the service's ``grpc_port``."""
    service = system.services[name]
    env = wiring_env(system, placement)
    env["EDGEWAY_PORT"] = str(port)
    if service.grpc_port is not None:
        env["EDGEWAY_GRPC_PORT"] = str(grpc_port if grpc_port is not None else service.grpc_port)
    if service.kind == "security":
        env.update(_security_env(system, placement, name))
    elif service.kind == "kit":
        env.update(_kit_env(system, placement, name, instance))
    env.update(service.env)
    if placement.target != "demo":
        env.update(service.deploy_env)
    return env


def edge_env(system: System, placement: Placement, name: str) -> dict[str, str]:
    edge = system.edges[name]
    env = wiring_env(system, placement)
    env.update(edge.env)
    if placement.target != "demo":
        env.update(edge.deploy_env)
    return env


def _security_env(system: System, placement: Placement, name: str) -> dict[str, str]:
    service = system.services[name]
    database = service.database or name
    env = {
        "EDGEWAY_SECURITY_PUBLIC_URL": placement.url(name),
        "EDGEWAY_SECURITY_BUS_URL": _bus_url(system, placement),
        "EDGEWAY_SECURITY_BUS_PREFIX": system.broker.prefix,
        "EDGEWAY_SECURITY_CORS_ORIGINS": json.dumps(placement.cors_origins),
    }
    if placement.database_url is not None:
        env["EDGEWAY_SECURITY_DB_URL"] = placement.database_url(database)
    else:
        env["EDGEWAY_SECURITY_DB_URL"] = f"sqlite+aiosqlite:///{placement.data_dir}/{database}.db"
    if placement.keys_path is not None:
        env["EDGEWAY_SECURITY_KEYS_PATH"] = placement.keys_path
    return env


def _kit_env(system: System, placement: Placement, name: str, instance: str) -> dict[str, str]:
    service = system.services[name]
    broker = system.broker
    env = {
        "EDGEWAY_SERVICE_NAME": name,
        "EDGEWAY_CORS_ORIGINS": json.dumps(placement.cors_origins),
        "EDGEWAY_CONFIG_CACHE_DIR": f"{placement.data_dir}/cache/{instance}",
    }
    if broker.rabbitmq is not None:
        env["EDGEWAY_BUS_URL"] = broker.rabbitmq.url
    if placement.bus_replicas > 1:
        env["EDGEWAY_BUS_REPLICAS"] = str(placement.bus_replicas)
    if broker.config_bucket:
        env["EDGEWAY_CONFIG_BUCKET"] = broker.config_bucket
    if placement.target == "demo":
        env["EDGEWAY_INSTANCE_ID"] = instance
    if placement.shutdown_grace is not None:
        env["EDGEWAY_SHUTDOWN_GRACE"] = f"{placement.shutdown_grace:g}"
    if placement.discovery == "registry" and broker.registry_bucket:
        env["EDGEWAY_ADVERTISE_URL"] = placement.url(instance)
        env["EDGEWAY_REGISTRY_BUCKET"] = broker.registry_bucket
        if placement.registry_ttl is not None:
            env["EDGEWAY_REGISTRY_TTL"] = f"{placement.registry_ttl:g}"
    elif placement.discovery == "dns":
        env["EDGEWAY_DNS_DISCOVERY"] = "true"
        if placement.dns_domain:
            env["EDGEWAY_DNS_DOMAIN"] = placement.dns_domain
    elif placement.discovery == "env":
        for other in system.services:
            key = "EDGEWAY_SERVICE_" + other.upper().replace("-", "_") + "_URLS"
            env[key] = placement.url(other)
    security = system.security_services()
    if security:
        base = placement.url(security[0])
        env["EDGEWAY_JWKS_URL"] = f"{base}/.well-known/jwks.json"
        env["EDGEWAY_SECURITY_URL"] = base
    if service.database is not None:
        if placement.database_url is not None:
            env["EDGEWAY_DATABASE_URL"] = placement.database_url(service.database)
        elif service.database != name:  # the kit's default file is <data_dir>/<service>.db
            env["EDGEWAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{placement.data_dir}/{service.database}.db"
    return env


def local_placement(
    system: System,
    data_dir: str,
    *,
    ports: Mapping[str, int] | None = None,
    host: str = "127.0.0.1",
    cors_origins: list[str] | None = None,
    log_level: str = "info",
    https: Collection[str] = (),
) -> Placement:
    """The system on one machine (``edgeway demo``): every process on ``host`` at its port,
    SQLite files in ``data_dir``, the embedded NATS (or the external one), the registry.
    The processes named in ``https`` serve HTTPS (``edgeway demo --tls``): their URLs say so."""
    ports = dict(process_ports(system) if ports is None else ports)
    urls = {
        name: f"{'https' if name in https else 'http'}://{host}:{port}"
        for name, port in ports.items()
        if name != "nats"
    }
    for name in system.services:
        urls[name] = urls[instance_names(system, name)[0]]
    nats = system.broker.nats
    nats_url = nats.external_url if nats.external_url is not None else f"nats://{host}:{ports['nats']}"
    urls["nats"] = nats_url
    return Placement(
        target="demo",
        bind_host=host,
        urls=urls,
        ports=ports,
        nats_url=nats_url,
        data_dir=data_dir,
        discovery="registry",
        keys_path=f"{data_dir}/security-keys.json",
        cors_origins=cors_origins or [],
        shutdown_grace=0.0,
        # The kit's default. 10 s was shorter than one heartbeat interval plus a NATS node's death
        # (JetStream elects the registry stream's new leader in 4-9 s): live instances aged out of
        # the gateways' view and every orders instance was gone for 3-4 s (bench cluster).
        registry_ttl=15.0,
        log_level=log_level,
    )
