"""Reading rendered Kubernetes manifests as the cluster would: the objects of ``base/``, a
Deployment's environment as its process sees it, an edge's config as its pod loads it. Shared by
the deploy tests and the scaffolding tests (a scaffolded repository rendered)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from dockerfile_checks import PINNED

from edgeway.gateway.config.loader import load_config
from edgeway.gateway.config.schema import GatewayConfig

Doc = dict[str, Any]


def rendered_docs(out: Path) -> list[tuple[str, Doc]]:
    """(file name, object) of every object under ``out/base`` but the kustomization."""
    found = []
    for path in sorted((out / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((path.name, doc))
    return found


def of_kind(docs: list[tuple[str, Doc]], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == kind}


def container_env(docs: list[tuple[str, Doc]], name: str) -> dict[str, str]:
    """A Deployment's environment as its process sees it: the wiring ConfigMap, then its own env,
    secret references filled with a stand-in, ``$(VAR)`` expanded like the kubelet does."""
    deployment = of_kind(docs, "Deployment")[name]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(of_kind(docs, "ConfigMap")[source["configMapRef"]["name"]]["data"])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(
                r"(?<!\$)\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = "stand-in-secret"
        else:
            env[item["name"]] = f"{name}-5d9c7b8f4-x2x7q"
    return env


def edge_config(tmp_path: Path, docs: list[tuple[str, Doc]], name: str) -> GatewayConfig:
    """The edge's config as the pod loads it: its ConfigMap mounted, its environment."""
    deployment = of_kind(docs, "Deployment")[name]
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    data = of_kind(docs, "ConfigMap")[volume["configMap"]["name"]]["data"]
    folder = tmp_path / name
    for item in volume["configMap"]["items"]:
        target = folder / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    command = pod["containers"][0]["command"]
    entry = Path(command[command.index("--config") + 1]).name
    return load_config(folder / entry, container_env(docs, name))


def pods(docs: list[tuple[str, Doc]]) -> Iterator[tuple[str, Doc, Doc]]:
    """(workload name, pod spec, container) of every Deployment, StatefulSet and Job."""
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in spec["containers"]:
                yield f"{doc['kind']}/{doc['metadata']['name']}", spec, container


def assert_locked_down(docs: list[tuple[str, Doc]]) -> None:
    """Every container has probes (jobs excepted) and resources, runs as a non-root user on a
    read-only root with no privilege to gain, and runs a pinned image."""
    for workload, pod, container in pods(docs):
        where = f"{workload}/{container['name']}"
        if not workload.startswith("Job/"):  # a job runs to its end: nothing to probe
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, where
        context = container["securityContext"]
        pod_context = pod["securityContext"]
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
        assert pod_context.get("runAsUser", 0) != 0, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        # a read-only root needs somewhere to write: /tmp is a volume everywhere
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where
        image = container["image"]
        assert PINNED.match(image), f"{where}: {image} is not pinned"
