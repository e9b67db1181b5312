"""`edgeway deploy render --target compose` on the shop: the file is valid against the Compose
Specification's JSON Schema, and hangs together — every dependency, volume, mount, env file and
interpolated secret exists, the edges' configs load as their containers will, and the processes
are locked down like on a cluster.

``compose_spec.json`` is the Compose Specification's schema as docker-compose 1.29.2 ships it on
PyPI (compose/config/compose_spec.json, Apache-2.0): newer compose files only add to it (the
top-level ``name`` is added below).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from dockerfile_checks import PINNED

from edgeway.demo.plan import SYSTEM_FILE
from edgeway.deploy.render import render
from edgeway.gateway.config.loader import load_config
from edgeway.system import load_system

SCHEMA = json.loads((Path(__file__).with_name("compose_spec.json")).read_text())
# The top-level project `name` came to the specification after that release (2022); it is the
# one key the render uses that the copy lacks.
SCHEMA["properties"]["name"] = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose")
    render(load_system(SYSTEM_FILE), "compose", out)
    return out


@pytest.fixture(scope="module")
def project(out: Path) -> dict[str, Any]:
    document = yaml.safe_load((out / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def _dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_compose_file_is_valid_against_the_compose_specification(project: dict[str, Any]) -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(project)]
    assert errors == []
    bad = json.loads(json.dumps(project))
    bad["services"]["orders"]["depends_on"]["nats"] = {"condition": "when_ready"}
    assert list(validator.iter_errors(bad))  # the schema is able to fail


def test_the_project_hangs_together(out: Path, project: dict[str, Any]) -> None:
    services = project["services"]
    system = load_system(SYSTEM_FILE).model
    assert set(system.services) | set(system.edges) | {"nats", "bus-setup", "postgres", "redis"} == set(
        services
    )
    assert services["catalog"]["deploy"]["replicas"] == 2
    secrets = _dotenv(out / ".env")
    assert set(secrets) == {"EDGEWAY_ADMIN_TOKEN", "EDGEWAY_SECURITY_KEK", "POSTGRES_PASSWORD"}
    assert oct((out / ".env").stat().st_mode & 0o777) == "0o600"
    text = (out / "compose.yaml").read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert interpolated <= set(secrets), interpolated - set(secrets)
    host_ports: list[str] = []
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on {dep}"
        for file in service.get("env_file", []):
            assert (out / file).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (out / source).exists(), f"{name}: {source}"
            else:
                assert source in project["volumes"], f"{name}: volume {source}"
        for port in service.get("ports", []):
            host_ports.append(port.rsplit(":", 1)[0])
        assert PINNED.match(service["image"]), service["image"]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    # no secret value in the project's files but .env
    for path in out.rglob("*"):
        if path.is_file() and path.name != ".env":
            for value in secrets.values():
                assert value not in path.read_text(), path


def test_edgeway_processes_run_locked_down(project: dict[str, Any]) -> None:
    system = load_system(SYSTEM_FILE).model
    for name in [*system.services, *system.edges]:
        service = project["services"][name]
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert service["healthcheck"]["test"][:3] == ["CMD", "python", "-c"], name
        assert service["environment"]["EDGEWAY_HEALTH_URL"].startswith("http://127.0.0.1:"), name
        assert set(service["deploy"]["resources"]) == {"limits", "reservations"}, name


def test_the_edges_load_their_configs_as_their_containers_will(out: Path, project: dict[str, Any]) -> None:
    services = project["services"]
    wiring = _dotenv(out / "wiring.env")
    secrets = _dotenv(out / ".env")
    for edge in ("gateway", "web-bff", "mobile-bff"):
        service = services[edge]
        (mount,) = service["volumes"]
        source, target, _ = mount.split(":")
        command = service["command"]
        entry = Path(command[command.index("--config") + 1]).relative_to(target)
        env = dict(wiring)
        for key, value in service["environment"].items():
            env[key] = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: secrets[m.group(1)], value)
        config = load_config(out / source / entry, env)
        assert config.listen.host == "0.0.0.0"
        for name, upstream in config.services.items():
            if upstream.discovery is not None:
                dns = upstream.discovery.dns
                assert dns is not None, f"{edge}: {name}"
                assert dns.name in services, f"{edge}: {name} resolves {dns.name}, no such compose service"
                assert dns.type == "A"
                spec = load_system(SYSTEM_FILE).model.services[dns.name]
                # a service's gRPC (the BFFs' inventory-grpc) is found at its grpc_port
                assert dns.port == (spec.grpc_port if name.endswith("-grpc") else spec.port), name
            for url in upstream.instances:
                assert urlsplit(url).hostname in services, f"{edge}: {name} at {url}"
    gateway = load_config(
        out / "edges" / "gateway" / "edge-compose.yaml", {**wiring, **services["gateway"]["environment"]}
    )
    assert gateway.rate_limits.backend == "redis"
    assert urlsplit(gateway.rate_limits.redis_url).hostname == "redis"


def test_kit_services_find_each_other_by_compose_names(project: dict[str, Any]) -> None:
    orders = project["services"]["orders"]["environment"]
    assert orders["EDGEWAY_SERVICE_PAYMENTS_URLS"] == "http://payments:8105"
    assert (
        orders["EDGEWAY_DATABASE_URL"]
        == "postgresql+asyncpg://edgeway:${POSTGRES_PASSWORD}@postgres:5432/orders"
    )
    assert project["services"]["orders"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert project["services"]["orders"]["depends_on"]["security"] == {"condition": "service_healthy"}
    assert project["services"]["orders"]["depends_on"]["bus-setup"] == {
        "condition": "service_completed_successfully"
    }
