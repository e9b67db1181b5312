"""A compose project from a system file: the same processes on one Docker host, for a team that
starts simple before Kubernetes.

Each service is a compose service with its instances as ``deploy.replicas`` (compose's DNS answers
every replica under the service's name), each edge publishes its port, NATS is one node with
JetStream, PostgreSQL and Redis are containers (or the external hosts the system file names). The
edges run their own config files (copied to ``edges/<name>/``) under a rendered file that finds
the services by DNS. Secrets are read from ``.env`` (created once, never overwritten).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeway.deploy import images
from edgeway.deploy.edges import EdgeFiles, edge_files
from edgeway.deploy.kubernetes_common import dump
from edgeway.deploy.placement import DATA_DIR, NATS_CLIENT_PORT, compose_placement
from edgeway.deploy.secrets import ADMIN_TOKEN, ENV_NAMES, KEK, POSTGRES_PASSWORD
from edgeway.gateway.process.admin_auth import TOKEN_ENV
from edgeway.system import LoadedSystem, System, edge_env, service_env, wiring_env
from edgeway.system.model import Pattern, Resources

__all__ = ["ComposeRender", "render_compose"]

HEADER = (
    "# Rendered by `edgeway deploy render --target compose` from {file}.\n"
    "# Edit the system file and render again. Secrets come from .env (created by the render).\n"
)
EDGE_CONFIG_DIR = "/etc/edgeway/edge"
WIRING_FILE = "wiring.env"


@dataclass(frozen=True, slots=True)
class ComposeRender:
    files: dict[str, str]
    secrets: list[str]  # what .env must hold
    edges: dict[str, EdgeFiles]


def _own(env: dict[str, str], wiring: dict[str, str]) -> dict[str, str]:
    """What a process's environment adds to the wiring every process reads from wiring.env."""
    return {k: v for k, v in env.items() if wiring.get(k) != v}


def _required(name: str) -> str:
    variable = ENV_NAMES[name]
    return "${" + variable + ":?" + variable + " is not set: run edgeway deploy render to create .env}"


def _escape(value: str, keep: list[str]) -> str:
    """compose interpolates ``$``: escape every one but the references we mean."""
    escaped = value.replace("$", "$$")
    for reference in keep:
        escaped = escaped.replace("$" + reference, reference)
    return escaped


def _resources(spec: Resources) -> dict[str, Any]:
    def cpus(value: str) -> str:
        return f"{int(value[:-1]) / 1000:g}" if value.endswith("m") else value

    def memory(value: str) -> str:
        # compose writes sizes as 512m / 1g
        for suffix, short in (("Ki", "k"), ("Mi", "m"), ("Gi", "g"), ("Ti", "t")):
            if value.endswith(suffix):
                return value[: -len(suffix)] + short
        return value

    return {
        "limits": {"cpus": cpus(spec.limits.cpu), "memory": memory(spec.limits.memory)},
        "reservations": {"cpus": cpus(spec.requests.cpu), "memory": memory(spec.requests.memory)},
    }


def _hardened() -> dict[str, Any]:
    """The edgeway image's user, a read-only root with a writable /tmp and data directory."""
    return {
        "user": f"{images.EDGEWAY_UID}:{images.EDGEWAY_UID}",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "restart": "unless-stopped",
    }


def _healthcheck() -> dict[str, Any]:
    """The image's own check (deploy/Dockerfile: GET $EDGEWAY_HEALTH_URL), written out so the
    project does not depend on how the image was built; compose waits on it (depends_on)."""
    return {
        "test": ["CMD", *images.HEALTH_PROBE],
        "interval": "5s",
        "timeout": "3s",
        "retries": 12,
        "start_period": "10s",
    }


def render_compose(loaded: LoadedSystem, *, pattern: Pattern | None = None) -> ComposeRender:
    system = loaded.model
    chosen = pattern or system.pattern
    placement = compose_placement(system)
    wiring = wiring_env(system, placement)
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    files: dict[str, str] = {}
    needed: set[str] = set()
    broker_ready: dict[str, Any] = {}

    if system.broker.nats.external_url is None:
        services["nats"] = {
            "image": images.NATS,
            "command": ["--jetstream", "--store_dir", "/data", "--http_port", "8222"],
            "volumes": ["nats-data:/data"],
            "healthcheck": {
                "test": [
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    "http://127.0.0.1:8222/healthz?js-enabled-only=true",
                ],
                "interval": "5s",
                "timeout": "3s",
                "retries": 12,
            },
            "restart": "unless-stopped",
        }
        volumes["nats-data"] = {}
        broker_ready["nats"] = {"condition": "service_healthy"}
        if system.broker.config_bucket:
            services["bus-setup"] = {
                "image": images.NATS_BOX,
                "command": ["nats", "kv", "add", system.broker.config_bucket, "--history=5"],
                "environment": {"NATS_URL": f"nats://nats:{NATS_CLIENT_PORT}"},
                "depends_on": {"nats": {"condition": "service_healthy"}},
                "restart": "no",
            }
            broker_ready["bus-setup"] = {"condition": "service_completed_successfully"}
    store_ready: dict[str, Any] = {}
    postgres = system.stores.postgres
    if postgres is not None:
        needed.add(POSTGRES_PASSWORD)
        if not postgres.external:
            databases = sorted({s.database for s in system.services.values() if s.database})
            files["postgres/databases.sql"] = "".join(f'CREATE DATABASE "{d}";\n' for d in databases)
            services["postgres"] = {
                "image": images.POSTGRES,
                "command": ["-p", str(postgres.port)],
                "environment": {
                    "POSTGRES_USER": postgres.user,
                    "POSTGRES_PASSWORD": _required(POSTGRES_PASSWORD),
                    "POSTGRES_DB": "postgres",
                },
                "volumes": [
                    "postgres-data:/var/lib/postgresql/data",
                    "./postgres/databases.sql:/docker-entrypoint-initdb.d/databases.sql:ro",
                ],
                "healthcheck": {
                    "test": [
                        "CMD",
                        "pg_isready",
                        "-U",
                        postgres.user,
                        "-d",
                        "postgres",
                        "-p",
                        str(postgres.port),
                    ],
                    "interval": "5s",
                    "timeout": "3s",
                    "retries": 12,
                },
                "restart": "unless-stopped",
            }
            volumes["postgres-data"] = {}
            store_ready["postgres"] = {"condition": "service_healthy"}
    redis = system.stores.redis
    if redis is not None and not redis.external:
        services["redis"] = {
            "image": images.REDIS,
            "command": ["redis-server", "--port", str(redis.port), "--save", "", "--appendonly", "no"],
            "healthcheck": {
                "test": ["CMD", "redis-cli", "-p", str(redis.port), "ping"],
                "interval": "5s",
                "timeout": "3s",
                "retries": 12,
            },
            "restart": "unless-stopped",
        }

    exposed = System.services_exposed(chosen)
    security = system.security_services()
    for name, service in system.services.items():
        env = _own(service_env(system, placement, name, name, service.port), wiring)
        keep = []
        if service.database is not None and postgres is not None:
            keep.append("${POSTGRES_PASSWORD}")
        environment = {k: _escape(v, keep) for k, v in sorted(env.items())}
        probes = service.probes()
        environment["EDGEWAY_HEALTH_URL"] = f"http://127.0.0.1:{service.port}{probes.ready}"
        depends: dict[str, Any] = dict(broker_ready)
        if service.database is not None:
            depends.update(store_ready)
        if service.kind == "kit":
            depends.update({s: {"condition": "service_healthy"} for s in security if s != name})
        for dep in service.after or ():
            if dep in system.services:
                depends[dep] = {"condition": "service_healthy"}
        entry: dict[str, Any] = {
            "image": service.image or system.image,
            "command": ["python", "-m", service.module] if service.module else list(service.command or ()),
            "env_file": [WIRING_FILE],
            "environment": environment,
            **_hardened(),
            "healthcheck": _healthcheck(),
            "deploy": {"replicas": service.instances, "resources": _resources(service.resources)},
        }
        if service.kind == "security":
            needed.add(KEK)
            environment["EDGEWAY_SECURITY_KEK"] = _required(KEK)
            # the signing keys are created on the first start, encrypted, in the service's volume
            entry["volumes"] = [f"{name}-data:{DATA_DIR}"]
            volumes[f"{name}-data"] = {}
        else:
            entry["tmpfs"] = ["/tmp", DATA_DIR]
        if depends:
            entry["depends_on"] = depends
        if exposed:
            entry["ports"] = [_published(service.port, service.instances)]
        services[name] = entry

    edges: dict[str, EdgeFiles] = {}
    for name in system.edges_of(chosen):
        edge = system.edges[name]
        full_env = edge_env(system, placement, name)
        found = edge_files(loaded, name, "compose", full_env, lambda s, port: _dns_rule(system, s, port))
        env = _own(full_env, wiring)
        edges[name] = found
        for path, text in found.files.items():
            files[f"edges/{name}/{path}"] = text
        needed.add(ADMIN_TOKEN)
        environment = {k: _escape(v, []) for k, v in sorted(env.items())}
        environment[TOKEN_ENV] = _required(ADMIN_TOKEN)
        environment["EDGEWAY_HEALTH_URL"] = f"http://127.0.0.1:{edge.admin_port}/readyz"
        depends = {**broker_ready}
        depends.update({s: {"condition": "service_healthy"} for s in system.services})
        if redis is not None and not redis.external:
            depends["redis"] = {"condition": "service_healthy"}
        services[name] = {
            "image": system.image,
            "command": ["edgeway", "gateway", "--config", f"{EDGE_CONFIG_DIR}/{found.entry}"],
            "env_file": [WIRING_FILE],
            "environment": environment,
            **_hardened(),
            "volumes": [f"./edges/{name}:{EDGE_CONFIG_DIR}:ro"],
            "healthcheck": _healthcheck(),
            "depends_on": depends,
            # one process per published port on one host; a cluster scales the edges out
            "deploy": {"replicas": 1, "resources": _resources(edge.resources)},
            # the admin API on the host's loopback only
            "ports": [f"{edge.port}:{edge.port}", f"127.0.0.1:{edge.admin_port}:{edge.admin_port}"],
        }

    document: dict[str, Any] = {"name": system.system, "services": services}
    if volumes:
        document["volumes"] = volumes
    header = HEADER.format(file=loaded.path.name)
    files["compose.yaml"] = dump([document], header)
    files[".gitignore"] = "# the secrets of this project\n.env\n"
    files[WIRING_FILE] = (
        "# Where every process of the system is reached (rendered by edgeway deploy): addresses, ports.\n"
        + "".join(f"{k}={v}\n" for k, v in sorted(wiring.items()))
    )
    return ComposeRender(files, sorted(needed), edges)


def _published(port: int, instances: int) -> str:
    """One host port per instance: the range the demo uses (compose picks one per replica)."""
    if instances == 1:
        return f"{port}:{port}"
    return f"{port}-{port + instances - 1}:{port}"


def _dns_rule(system: System, service: str, port: str) -> dict[str, Any]:
    # compose's DNS has address records per replica, no SRV: the port is the service's own (its
    # grpc_port for its gRPC; edges.py checked it has one), and a TTL of 600 s: resolve every few
    # seconds instead, to see replicas come and go
    spec = system.services[service]
    number = spec.grpc_port if port == "grpc" and spec.grpc_port is not None else spec.port
    return {"dns": {"name": service, "type": "A", "port": number, "max_ttl": "5s"}}
