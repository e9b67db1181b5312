"""What every rendered Kubernetes object shares: names, labels, the restricted security context,
probes, resources, disruption budgets, and plain YAML out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from edgeway.system.model import Resources

__all__ = [
    "Manifest",
    "Names",
    "container_security",
    "digest",
    "dump",
    "env_list",
    "http_probe",
    "pdb",
    "pod_security",
    "resources",
]

Manifest = dict[str, Any]

# Labels. `component` is what the NetworkPolicies select on.
NAME = "app.kubernetes.io/name"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"


@dataclass(frozen=True, slots=True)
class Names:
    system: str
    namespace: str

    def labels(self, name: str, component: str) -> dict[str, str]:
        return {NAME: name, PART_OF: self.system, COMPONENT: component, MANAGED_BY: "edgeway"}

    def selector(self, name: str) -> dict[str, str]:
        return {NAME: name, PART_OF: self.system}

    def meta(self, name: str, component: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(name, component), **extra}


def pod_security(uid: int, *, fs_group: bool = True) -> dict[str, Any]:
    """The pod level of the "restricted" Pod Security Standard: not root, the runtime's seccomp
    profile; ``fsGroup`` makes mounted volumes (claims, Secrets) readable by the process's group."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group:
        context["fsGroup"] = uid
    return context


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(spec: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": spec.requests.cpu, "memory": spec.requests.memory},
        "limits": {"cpu": spec.limits.cpu, "memory": spec.limits.memory},
    }


def http_probe(path: str, port: str, *, period: int, failures: int = 3, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def exec_probe(command: list[str], *, period: int, failures: int = 3, timeout: int = 3) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def pdb(names: Names, name: str, component: str) -> Manifest:
    """At most one instance away at a time for voluntary disruptions (node drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": names.meta(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector(name)}},
    }


def _escape(value: str, keep: Iterable[str]) -> str:
    """Kubernetes expands ``$(VAR)`` in env values: escape every one but the references we mean."""
    escaped = value.replace("$(", "$$(")
    for reference in keep:
        escaped = escaped.replace("$" + reference, reference)
    return escaped


def env_list(
    env: Mapping[str, str], *, first: Iterable[dict[str, Any]] = (), references: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """``env`` as a container's list, after ``first`` (secret and field references, which the
    values may refer to as ``$(NAME)``), sorted for a stable render."""
    keep = [f"$({name})" for name in references]
    out = list(first)
    taken = {item["name"] for item in out}
    out += [{"name": k, "value": _escape(v, keep)} for k, v in sorted(env.items()) if k not in taken]
    return out


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &anchors: each object reads on its own


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (config files in ConfigMaps) as literal blocks, readable in a diff.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def digest(data: Mapping[str, str]) -> str:
    """A stable hash of a ConfigMap's data, put on the pods that read it: a change rolls them."""
    return hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(data.items())).encode()).hexdigest()


def dump(documents: Iterable[Manifest], header: str = "") -> str:
    body = "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
        for doc in documents
    )
    return header + body
