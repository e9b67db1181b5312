"""Kubernetes manifests from a system file: plain YAML laid out for Kustomize (``base/`` and an
overlay), which ``kubectl apply -k`` applies without any other tool.

Per service: a Deployment (its instances as replicas), a headless Service (the DNS names the
gateways and the kit resolve to pod addresses: ``_http._tcp.<name>.<namespace>.svc.<domain>``),
a PodDisruptionBudget, a HorizontalPodAutoscaler when it is stateless, and the NetworkPolicy its
pattern gives it. Per edge the same, plus a ConfigMap of its gateway config files. Then the NATS
cluster, the stores, the namespace (Pod Security "restricted" enforced) with its default-deny
policy, and the kustomization that names the Secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeway.deploy import images, kubernetes_backing
from edgeway.deploy.edges import EdgeFiles, edge_files
from edgeway.deploy.kubernetes_common import (
    COMPONENT,
    PART_OF,
    Manifest,
    Names,
    container_security,
    digest,
    dump,
    env_list,
    http_probe,
    pdb,
    pod_security,
    resources,
)
from edgeway.deploy.placement import DATA_DIR, SECRETS_DIR, ClusterOptions, kubernetes_placement
from edgeway.deploy.secrets import ADMIN_TOKEN, KEK, POSTGRES_PASSWORD, SIGNING_KEYS
from edgeway.gateway.process.admin_auth import TOKEN_ENV
from edgeway.system import LoadedSystem, Placement, System, edge_env, service_env, wiring_env
from edgeway.system.model import Pattern, Resources, Service

__all__ = ["KubernetesRender", "render_kubernetes"]

EDGE_CONFIG_DIR = "/etc/edgeway/edge"
HEADER = (
    "# Rendered by `edgeway deploy render --target kubernetes` from {file}.\n"
    "# Edit the system file and render again.\n"
)


@dataclass(frozen=True, slots=True)
class KubernetesRender:
    files: dict[str, str]  # path under the output directory → text
    secrets: list[str]  # the secret files base/secrets/ must hold
    edges: dict[str, EdgeFiles]


def secret_names(system: System) -> dict[str, str]:
    """The Secrets (by what they hold) this system needs, named after it."""
    names = {}
    if system.edges:
        names[ADMIN_TOKEN] = f"{system.system}-edge-admin"
    if system.security_services():
        names[SIGNING_KEYS] = f"{system.system}-signing-keys"
    if system.stores.postgres is not None:
        names[POSTGRES_PASSWORD] = f"{system.system}-postgres"
    return names


def render_kubernetes(
    loaded: LoadedSystem, options: ClusterOptions, *, pattern: Pattern | None = None
) -> KubernetesRender:
    system = loaded.model
    chosen = pattern or system.pattern
    names = Names(system.system, options.namespace)
    placement = kubernetes_placement(system, options)
    secrets = secret_names(system)
    header = HEADER.format(file=loaded.path.name)
    files: dict[str, str] = {}
    resources_order: list[str] = []

    def add(filename: str, documents: list[Manifest]) -> None:
        if documents:
            files[f"base/{filename}"] = dump(documents, header)
            resources_order.append(filename)

    wiring = wiring_env(system, placement)
    add("namespace.yaml", [*_namespace(names), _wiring(names, wiring)])
    if system.broker.nats.external_url is None:
        add("nats.yaml", kubernetes_backing.nats_cluster(system, names, options))
    add("bus-setup.yaml", kubernetes_backing.bus_setup(system, names))
    if system.stores.postgres is not None:
        add("postgres.yaml", kubernetes_backing.postgres(system, names, secret=secrets[POSTGRES_PASSWORD]))
        add(
            "postgres-policy.yaml",
            [_store_policy(names, "postgres", system.stores.postgres.port, ["service"])],
        )
    if system.stores.redis is not None:
        add("redis.yaml", kubernetes_backing.redis(system, names))
        add("redis-policy.yaml", [_store_policy(names, "redis", system.stores.redis.port, ["edge"])])
    if system.broker.nats.external_url is None:
        add("nats-policy.yaml", _nats_policies(names))
    exposed = System.services_exposed(chosen)
    for name in system.services:
        add(f"{name}.yaml", _service(system, names, placement, wiring, name, exposed, secrets))
    edges: dict[str, EdgeFiles] = {}
    for name in system.edges_of(chosen):
        env = edge_env(system, placement, name)
        found = edge_files(loaded, name, "kubernetes", env, lambda s, port: _dns_rule(s, port, options))
        edges[name] = found
        add(f"{name}.yaml", _edge(system, names, wiring, env, name, found, secrets))
    files["base/kustomization.yaml"] = _kustomization(system, options, resources_order, secrets, header)
    files["overlays/production/kustomization.yaml"] = _overlay(system, header)
    needed = [KEK, *secrets] if SIGNING_KEYS in secrets else list(secrets)
    return KubernetesRender(files, sorted(set(needed)), edges)


def _dns_rule(service: str, port: str, options: ClusterOptions) -> dict[str, Any]:
    # SRV: host and port per ready pod, from the headless Service's named port (`http`, `grpc`)
    return {"dns": {"name": f"_{port}._tcp.{service}.{options.dns_domain}", "type": "SRV"}}


def _namespace(names: Names) -> list[Manifest]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": names.namespace,
            "labels": {
                PART_OF: names.system,
                # every pod here must meet the "restricted" Pod Security Standard
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-ingress", "namespace": names.namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    return [namespace, deny]


def _wiring(names: Names, wiring: Mapping[str, str]) -> Manifest:
    """What every process is told about where the others are (system.wiring): one ConfigMap, read
    whole by each container (``envFrom``). Addresses and ports only: nothing secret."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.meta(f"{names.system}-wiring", "config"),
        "data": dict(sorted(wiring.items())),
    }


def _own(env: Mapping[str, str], wiring: Mapping[str, str]) -> dict[str, str]:
    """The part of a process's environment the wiring ConfigMap does not already give it."""
    return {k: v for k, v in env.items() if wiring.get(k) != v}


def _volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A writable /tmp and data directory on a read-only root filesystem."""
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": DATA_DIR}]
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    return mounts, volumes


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _deployment(
    names: Names,
    name: str,
    component: str,
    replicas: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    selector = names.selector(name)
    template_meta: dict[str, Any] = {"labels": names.labels(name, component)}
    if annotations:
        template_meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": names.meta(name, component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # a new instance is ready before an old one goes
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(images.EDGEWAY_UID),
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                        }
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _container(
    name: str,
    image: str,
    command: list[str],
    ports: list[dict[str, Any]],
    wiring: str,
    env: list[dict[str, Any]],
    ready: dict[str, Any],
    live: dict[str, Any],
    spec: Resources,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    # Until the process answers its liveness path, the startup probe holds the liveness probe
    # back (a minute at most): a slow start is not a crash.
    startup = {**live, "periodSeconds": 2, "failureThreshold": 30}
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "ports": ports,
        "envFrom": [{"configMapRef": {"name": wiring}}],
        "env": env,
        "startupProbe": startup,
        "readinessProbe": ready,
        "livenessProbe": live,
        "resources": resources(spec),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def _hpa(names: Names, name: str, component: str, low: int, high: int) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.meta(name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _service(
    system: System,
    names: Names,
    placement: Placement,
    wiring: Mapping[str, str],
    name: str,
    exposed: bool,
    secrets: dict[str, str],
) -> list[Manifest]:
    service = system.services[name]
    component = "service"
    env = _own(service_env(system, placement, name, name, service.port), wiring)
    first: list[dict[str, Any]] = [
        {"name": "EDGEWAY_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    references: list[str] = []
    if service.database is not None and POSTGRES_PASSWORD in secrets:
        first.append(_secret_env("POSTGRES_PASSWORD", secrets[POSTGRES_PASSWORD], "password"))
        references.append("POSTGRES_PASSWORD")
    mounts, volumes = _volumes()
    if service.kind == "security":
        first.append(_secret_env("EDGEWAY_SECURITY_KEK", secrets[SIGNING_KEYS], KEK))
        mounts.append({"name": "signing-keys", "mountPath": SECRETS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "signing-keys",
                # group-readable through fsGroup: the key file is encrypted with the KEK, which
                # the process gets from the environment, never from a file next to it
                "secret": {
                    "secretName": secrets[SIGNING_KEYS],
                    "items": [{"key": SIGNING_KEYS, "path": SIGNING_KEYS}],
                    "defaultMode": 0o440,
                },
            }
        )
    probes = service.probes()
    command = ["python", "-m", service.module] if service.module else list(service.command or ())
    container = _container(
        name,
        service.image or system.image,
        command,
        [{"name": "http", "containerPort": service.port}, *_grpc_ports(service, "containerPort")],
        f"{names.system}-wiring",
        env_list(env, first=first, references=references),
        http_probe(probes.ready, "http", period=5),
        http_probe(probes.live, "http", period=10),
        service.resources,
        mounts,
    )
    documents: list[Manifest] = [
        _deployment(
            names,
            name,
            component,
            service.instances,
            container,
            volumes,
            {"edgeway.dev/wiring-sha256": digest(wiring)},
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": names.meta(name, component),
            "spec": {
                # headless: DNS answers every ready pod, so the gateways and the kit balance and
                # health-check each instance themselves
                "clusterIP": "None",
                "selector": names.selector(name),
                "ports": [
                    {"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"},
                    # named `grpc`: the SRV record `_grpc._tcp.<service>` the kit's DNS discovery reads
                    *({**p, "targetPort": "grpc", "protocol": "TCP"} for p in _grpc_ports(service, "port")),
                ],
            },
        },
        pdb(names, name, component),
    ]
    if service.stateless:
        documents.append(_hpa(names, name, component, service.instances, service.ceiling()))
    if exposed:
        documents.append(_public_service(names, name, component, service.port))
    documents.append(
        _process_policy(names, name, component, service.port, public=exposed, grpc=service.grpc_port)
    )
    return documents


def _grpc_ports(service: Service, key: str) -> list[dict[str, Any]]:
    return [] if service.grpc_port is None else [{"name": "grpc", key: service.grpc_port}]


def _public_service(names: Names, name: str, component: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.meta(f"{name}-public", component),
        "spec": {
            "type": "LoadBalancer",
            "selector": names.selector(name),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _edge(
    system: System,
    names: Names,
    wiring: Mapping[str, str],
    env: dict[str, str],
    name: str,
    found: EdgeFiles,
    secrets: dict[str, str],
) -> list[Manifest]:
    edge = system.edges[name]
    component = "edge"
    config_map = f"{name}-config"
    keys = {path: path.replace("/", "__") for path in found.files}
    data = {keys[path]: text for path, text in sorted(found.files.items())}
    mounts, volumes = _volumes()
    mounts.append({"name": "config", "mountPath": EDGE_CONFIG_DIR, "readOnly": True})
    volumes.append(
        {
            "name": "config",
            "configMap": {
                "name": config_map,
                "items": [{"key": k, "path": p} for p, k in sorted(keys.items())],
            },
        }
    )
    first = [_secret_env(TOKEN_ENV, secrets[ADMIN_TOKEN], ADMIN_TOKEN)]
    container = _container(
        name,
        system.image,
        ["edgeway", "gateway", "--config", f"{EDGE_CONFIG_DIR}/{found.entry}"],
        [
            {"name": "http", "containerPort": edge.port},
            {"name": "admin", "containerPort": edge.admin_port},
        ],
        f"{names.system}-wiring",
        env_list(_own(env, wiring), first=first),
        http_probe("/readyz", "admin", period=5),
        http_probe("/healthz", "admin", period=10),
        edge.resources,
        mounts,
    )
    # A new config rolls the edge's pods (a ConfigMap's change alone would not).
    annotations = {"edgeway.dev/config-sha256": digest(data), "edgeway.dev/wiring-sha256": digest(wiring)}
    deployment = _deployment(names, name, component, edge.instances, container, volumes, annotations)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": names.meta(config_map, component),
            "data": data,
        },
        deployment,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": names.meta(name, component),
            "spec": {
                "selector": names.selector(name),
                "ports": [{"name": "http", "port": edge.port, "targetPort": "http", "protocol": "TCP"}],
            },
        },
        _public_service(names, name, component, edge.port),
        pdb(names, name, component),
        _hpa(names, name, component, edge.instances, edge.ceiling()),
        _process_policy(names, name, component, edge.port, public=True),
    ]


def _from_components(names: Names, components: list[str]) -> dict[str, Any]:
    return {
        "podSelector": {
            "matchLabels": {PART_OF: names.system},
            "matchExpressions": [{"key": COMPONENT, "operator": "In", "values": components}],
        }
    }


def _process_policy(
    names: Names, name: str, component: str, port: int, *, public: bool, grpc: int | None = None
) -> Manifest:
    """Who may open a connection to a process. Public (an edge; a service in the Direct pattern):
    anyone, on its traffic port (and its gRPC port). Otherwise: the system's edges and services
    only. An edge's admin port is in no rule: only the kubelet's probes and ``kubectl
    port-forward`` reach it."""
    ports = [port] if grpc is None else [port, grpc]
    rule: dict[str, Any] = {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    if not public:
        rule["from"] = [_from_components(names, ["edge", "service"])]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.meta(f"{name}-ingress", component),
        "spec": {
            "podSelector": {"matchLabels": names.selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def _store_policy(names: Names, name: str, port: int, clients: list[str]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.meta(f"{name}-ingress", "store"),
        "spec": {
            "podSelector": {"matchLabels": names.selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [_from_components(names, clients)], "ports": [{"port": port, "protocol": "TCP"}]}
            ],
        },
    }


def _nats_policies(names: Names) -> list[Manifest]:
    clients = {"from": [_from_components(names, ["edge", "service", "job"])], "ports": [{"port": 4222}]}
    peers = {
        "from": [{"podSelector": {"matchLabels": names.selector("nats")}}],
        "ports": [{"port": kubernetes_backing.NATS_CLUSTER_PORT}, {"port": 4222}],
    }
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": names.meta("nats-ingress", "broker"),
            "spec": {
                "podSelector": {"matchLabels": names.selector("nats")},
                "policyTypes": ["Ingress"],
                "ingress": [clients, peers],
            },
        }
    ]


def _kustomization(
    system: System, options: ClusterOptions, resources_order: list[str], secrets: dict[str, str], header: str
) -> str:
    generators = []
    if ADMIN_TOKEN in secrets:
        generators.append({"name": secrets[ADMIN_TOKEN], "files": [f"{ADMIN_TOKEN}=secrets/{ADMIN_TOKEN}"]})
    if SIGNING_KEYS in secrets:
        generators.append(
            {
                "name": secrets[SIGNING_KEYS],
                "files": [f"{SIGNING_KEYS}=secrets/{SIGNING_KEYS}", f"{KEK}=secrets/{KEK}"],
            }
        )
    if POSTGRES_PASSWORD in secrets:
        generators.append(
            {"name": secrets[POSTGRES_PASSWORD], "files": [f"password=secrets/{POSTGRES_PASSWORD}"]}
        )
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": options.namespace,
        "resources": resources_order,
    }
    if generators:
        # The values live in files next to this one (base/secrets/, git-ignored); Kustomize
        # makes Secrets of them, named with a hash of their content, so a new value rolls the pods.
        document["secretGenerator"] = [{**g, "type": "Opaque"} for g in generators]
    return dump([document], header)


def split_image(image: str) -> tuple[str, str]:
    """``registry:5000/team/edgeway:1.2`` → (``registry:5000/team/edgeway``, ``1.2``)."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def _overlay(system: System, header: str) -> str:
    images = [system.image, *(s.image for s in system.services.values() if s.image is not None)]
    pulled: dict[str, dict[str, str]] = {}
    for image in images:  # edgeway's, then each service's own; Kustomize matches them by name
        name, tag = split_image(image)
        pulled.setdefault(name, {"name": name, "newName": name, "newTag": tag})
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base"],
        # where this cluster pulls the images from; change it here, not in the base
        "images": list(pulled.values()),
    }
    return dump([document], header)
