"""What the system's processes need that is not edgeway: the NATS cluster (StatefulSet, JetStream
with a replica per node), the job that creates the config bucket, PostgreSQL and Redis (a small
StatefulSet each, or an external endpoint)."""

from __future__ import annotations

import ipaddress
from typing import Any

from edgeway.deploy import images
from edgeway.deploy.kubernetes_common import (
    Manifest,
    Names,
    container_security,
    exec_probe,
    http_probe,
    pdb,
    pod_security,
)
from edgeway.deploy.placement import NATS_CLIENT_PORT, ClusterOptions
from edgeway.system import System

__all__ = ["bus_setup", "nats_cluster", "postgres", "redis"]

NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222


def _tmp() -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "tmp", "mountPath": "/tmp"}, {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}


def nats_config(system: System, options: ClusterOptions) -> str:
    size = system.broker.nats.cluster_size
    lines = [
        "# NATS with JetStream, one server per pod of the StatefulSet (rendered by edgeway deploy).",
        "server_name: $POD_NAME",
        f"listen: 0.0.0.0:{NATS_CLIENT_PORT}",
        f"http: 0.0.0.0:{NATS_MONITOR_PORT}",
        "lame_duck_duration: 30s",
        "lame_duck_grace_period: 10s",
        "jetstream {",
        "  store_dir: /data/jetstream",
        "}",
    ]
    if size > 1:
        routes = ", ".join(
            f"nats://nats-{i}.nats-cluster.{options.dns_domain}:{NATS_CLUSTER_PORT}" for i in range(size)
        )
        lines += [
            "cluster {",
            f"  name: {system.system}",
            f"  listen: 0.0.0.0:{NATS_CLUSTER_PORT}",
            f"  routes: [{routes}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def nats_cluster(system: System, names: Names, options: ClusterOptions) -> list[Manifest]:
    """``cluster_size`` NATS servers routed to each other; JetStream keeps each stream on as many
    (the services declare their streams with that many replicas): one node may go down."""
    nats = system.broker.nats
    component = "broker"
    selector = names.selector("nats")
    mount_tmp, tmp = _tmp()
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.meta("nats-config", component),
        "data": {"nats.conf": nats_config(system, options)},
    }
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.meta("nats", component),
        "spec": {
            "selector": selector,
            "ports": [{"name": "client", "port": NATS_CLIENT_PORT, "targetPort": "client"}],
        },
    }
    peers = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.meta("nats-cluster", component),
        "spec": {
            "clusterIP": "None",
            # peers must find each other before they are ready: readiness needs the cluster
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [
                {"name": "client", "port": NATS_CLIENT_PORT, "targetPort": "client"},
                {"name": "cluster", "port": NATS_CLUSTER_PORT, "targetPort": "cluster"},
                {"name": "monitor", "port": NATS_MONITOR_PORT, "targetPort": "monitor"},
            ],
        },
    }
    container = {
        "name": "nats",
        "image": images.NATS,
        "imagePullPolicy": "IfNotPresent",
        "command": ["nats-server", "--config", "/etc/nats/nats.conf"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GOMEMLIMIT", "value": "900MiB"},
        ],
        "ports": [
            {"name": "client", "containerPort": NATS_CLIENT_PORT},
            {"name": "cluster", "containerPort": NATS_CLUSTER_PORT},
            {"name": "monitor", "containerPort": NATS_MONITOR_PORT},
        ],
        # the probes of the NATS project's own chart: alive once JetStream is up, ready when
        # this server's JetStream has caught up
        "startupProbe": http_probe("/healthz", "monitor", period=5, failures=90),
        "livenessProbe": http_probe("/healthz?js-enabled-only=true", "monitor", period=30, failures=3),
        "readinessProbe": http_probe("/healthz?js-server-only=true", "monitor", period=10, failures=3),
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/nats", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
            mount_tmp,
        ],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": names.meta("nats", component),
        "spec": {
            "serviceName": "nats-cluster",
            "replicas": nats.cluster_size,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": names.labels("nats", component)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(images.NATS_UID),
                    "terminationGracePeriodSeconds": 60,
                    "topologySpreadConstraints": [_spread(selector)],
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": "nats-config"}}, tmp],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": nats.storage}},
                    },
                }
            ],
        },
    }
    return [config, client, peers, statefulset, pdb(names, "nats", component)]


def _spread(selector: dict[str, str]) -> dict[str, Any]:
    return {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector},
    }


def bus_setup(system: System, names: Names) -> list[Manifest]:
    """The config bucket (feature flags) the services read at start, with a replica per NATS node.
    Idempotent: adding a bucket that exists with the same settings succeeds; the job retries
    until NATS answers."""
    bucket = system.broker.config_bucket
    if not bucket:
        return []
    replicas = system.broker.nats.cluster_size
    mount_tmp, tmp = _tmp()
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": names.meta("bus-setup", "job"),
            "spec": {
                "backoffLimit": 20,
                "template": {
                    "metadata": {"labels": names.labels("bus-setup", "job")},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": pod_security(images.NATS_UID, fs_group=False),
                        "containers": [
                            {
                                "name": "bus-setup",
                                "image": images.NATS_BOX,
                                "imagePullPolicy": "IfNotPresent",
                                "command": [
                                    "nats",
                                    "kv",
                                    "add",
                                    bucket,
                                    f"--replicas={replicas}",
                                    "--history=5",
                                ],
                                "env": [
                                    {
                                        "name": "NATS_URL",
                                        "value": system.broker.nats.external_url
                                        or f"nats://nats:{NATS_CLIENT_PORT}",
                                    },
                                    {"name": "HOME", "value": "/tmp"},
                                ],
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "16Mi"},
                                    "limits": {"cpu": "200m", "memory": "64Mi"},
                                },
                                "securityContext": container_security(),
                                "volumeMounts": [mount_tmp],
                            }
                        ],
                        "volumes": [tmp],
                    },
                },
            },
        }
    ]


def _external(names: Names, name: str, component: str, host: str, port: int) -> list[Manifest]:
    """A store outside the cluster under a Service name: ExternalName for a host name, a Service
    with an EndpointSlice for an address (ExternalName cannot point at an IP)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": names.meta(name, component),
                "spec": {
                    "type": "ExternalName",
                    "externalName": host,
                    "ports": [{"name": name, "port": port}],
                },
            }
        ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": names.meta(name, component),
            "spec": {"ports": [{"name": name, "port": port, "targetPort": port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                **names.meta(f"{name}-external", component),
                "labels": {**names.labels(name, component), "kubernetes.io/service-name": name},
            },
            "addressType": "IPv4" if address.version == 4 else "IPv6",
            "endpoints": [{"addresses": [str(address)]}],
            "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        },
    ]


def postgres_init(system: System) -> str:
    """One database per service (CREATE DATABASE on the first start of an empty volume)."""
    databases = sorted({s.database for s in system.services.values() if s.database is not None})
    return "".join(f'CREATE DATABASE "{name}";\n' for name in databases)


def postgres(system: System, names: Names, *, secret: str) -> list[Manifest]:
    store = system.stores.postgres
    if store is None:
        return []
    component = "store"
    if store.external:
        return _external(names, "postgres", component, store.external, store.port)
    selector = names.selector("postgres")
    mount_tmp, tmp = _tmp()
    ready = ["pg_isready", "-U", store.user, "-d", "postgres", "-h", "127.0.0.1", "-p", str(store.port)]
    container = {
        "name": "postgres",
        "image": images.POSTGRES,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-p", str(store.port)],
        "env": [
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
            {"name": "POSTGRES_USER", "value": store.user},
            {"name": "POSTGRES_DB", "value": "postgres"},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": store.port}],
        "startupProbe": exec_probe(ready, period=5, failures=60),
        "livenessProbe": exec_probe(ready, period=15, failures=4),
        "readinessProbe": exec_probe(ready, period=5, failures=3),
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            mount_tmp,
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": names.meta("postgres-init", component),
            "data": {"databases.sql": postgres_init(system)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": names.meta("postgres", component),
            "spec": {
                "selector": selector,
                "ports": [{"name": "postgres", "port": store.port, "targetPort": "postgres"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": names.meta("postgres", component),
            "spec": {
                "serviceName": "postgres",
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": names.labels("postgres", component)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": pod_security(images.POSTGRES_UID),
                        "terminationGracePeriodSeconds": 60,
                        "containers": [container],
                        "volumes": [
                            {"name": "init", "configMap": {"name": "postgres-init"}},
                            {"name": "run", "emptyDir": {}},
                            tmp,
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": store.storage}},
                        },
                    }
                ],
            },
        },
    ]


def redis(system: System, names: Names) -> list[Manifest]:
    store = system.stores.redis
    if store is None:
        return []
    component = "store"
    if store.external:
        return _external(names, "redis", component, store.external, store.port)
    selector = names.selector("redis")
    mount_tmp, tmp = _tmp()
    ping = ["redis-cli", "-p", str(store.port), "ping"]
    container = {
        "name": "redis",
        "image": images.REDIS,
        "imagePullPolicy": "IfNotPresent",
        # shared rate-limit buckets and cached responses: worth little after a restart, so no
        # persistence, and a memory ceiling with eviction of the least recently used
        "command": [
            "redis-server",
            "--port",
            str(store.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "200mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        "ports": [{"name": "redis", "containerPort": store.port}],
        "livenessProbe": exec_probe(ping, period=15, failures=4),
        "readinessProbe": exec_probe(ping, period=5, failures=3),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, mount_tmp],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": names.meta("redis", component),
            "spec": {
                "selector": selector,
                "ports": [{"name": "redis", "port": store.port, "targetPort": "redis"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": names.meta("redis", component),
            "spec": {
                "serviceName": "redis",
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": names.labels("redis", component)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": pod_security(images.REDIS_UID),
                        "containers": [container],
                        "volumes": [{"name": "data", "emptyDir": {}}, tmp],
                    },
                },
            },
        },
    ]
