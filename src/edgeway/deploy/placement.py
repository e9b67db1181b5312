"""Where each process of a system is reached on a cluster and in a compose project: by the name of
its Service (Kubernetes DNS, or compose's), on the port the system file gives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeway.system import Placement, System, instance_names

__all__ = ["ClusterOptions", "compose_placement", "kubernetes_placement"]

NATS_CLIENT_PORT = 4222
DATA_DIR = "/data"
# Where a Kubernetes Secret volume puts the signing keys (docs/deploy.md, "Secrets").
SECRETS_DIR = "/run/secrets/edgeway"
# Seconds a process keeps serving after its readiness turns false at shutdown, while the
# endpoints (and the gateways' DNS answers) forget it.
SHUTDOWN_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    namespace: str
    cluster_domain: str = "cluster.local"

    @property
    def dns_domain(self) -> str:
        """What a bare Service name is completed with: ``<namespace>.svc.<cluster domain>``."""
        return f"{self.namespace}.svc.{self.cluster_domain}"


def _urls(system: System, *, direct_stores: bool = False) -> dict[str, str]:
    """Base URLs by name; with ``direct_stores`` an external store by its own host (compose has no
    ExternalName Services)."""
    urls: dict[str, str] = {}
    for name, service in system.services.items():
        urls[name] = f"http://{name}:{service.port}"
        for instance in instance_names(system, name):
            urls[instance] = urls[name]
    for name, edge in system.edges.items():
        urls[name] = f"http://{name}:{edge.port}"
        urls[f"{name}-admin"] = f"http://{name}:{edge.admin_port}"
    nats = system.broker.nats
    urls["nats"] = nats.external_url or f"nats://nats:{NATS_CLIENT_PORT}"
    redis = system.stores.redis
    if redis is not None:
        host = redis.external if direct_stores and redis.external else "redis"
        urls["redis"] = f"redis://{host}:{redis.port}"
    return urls


def _ports(system: System) -> dict[str, int]:
    """The named ports as they are inside each container: every instance on its service's port."""
    ports: dict[str, int] = {}
    for name, service in system.services.items():
        for instance in instance_names(system, name):
            ports[instance] = service.port
    for name, edge in system.edges.items():
        ports[name] = edge.port
        ports[f"{name}-admin"] = edge.admin_port
    return ports


def _database_url(
    system: System, password: str, *, direct_stores: bool = False
) -> Callable[[str], str] | None:
    postgres = system.stores.postgres
    if postgres is None:
        return None
    user, port = postgres.user, postgres.port
    host = postgres.external if direct_stores and postgres.external else "postgres"

    def url(database: str) -> str:
        return f"postgresql+asyncpg://{user}:{password}@{host}:{port}/{database}"

    return url


def kubernetes_placement(system: System, options: ClusterOptions) -> Placement:
    """Pods listen on every address; Services are reached by name; the gateways and the kit find
    instances by DNS (the headless Services); streams keep a replica per NATS node; databases are
    PostgreSQL, the password coming from a Secret (``$(POSTGRES_PASSWORD)``, which Kubernetes
    expands from the variable set before it)."""
    return Placement(
        target="kubernetes",
        bind_host="0.0.0.0",
        urls=_urls(system),
        ports=_ports(system),
        nats_url=_urls(system)["nats"],
        data_dir=DATA_DIR,
        discovery="dns",
        bus_replicas=system.broker.nats.cluster_size,
        dns_domain=options.dns_domain,
        database_url=_database_url(system, "$(POSTGRES_PASSWORD)"),
        keys_path=f"{SECRETS_DIR}/signing-keys.json",
        shutdown_grace=SHUTDOWN_GRACE,
    )


def compose_placement(system: System) -> Placement:
    """One machine, one network: services by their compose name, instances by compose's DNS (the
    kit from ``EDGEWAY_SERVICE_<NAME>_URLS``), one NATS node, the signing keys created by the
    security service in its volume."""
    return Placement(
        target="compose",
        bind_host="0.0.0.0",
        urls=_urls(system, direct_stores=True),
        ports=_ports(system),
        nats_url=_urls(system)["nats"],
        data_dir=DATA_DIR,
        discovery="env",
        database_url=_database_url(system, "${POSTGRES_PASSWORD}", direct_stores=True),
        keys_path=f"{DATA_DIR}/security-keys.json",
        shutdown_grace=1.0,
    )
