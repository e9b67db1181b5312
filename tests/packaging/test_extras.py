"""A missing extra is named where it is needed: at config load, by the CLI, by the broker choice.

The packages an extra installs are made unimportable the way Python itself does it
(``sys.modules[name] = None``: ``import`` raises ModuleNotFoundError, ``find_spec`` finds
nothing), in this process with monkeypatch or in a child ``edgeway`` process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeway.bus.brokers import transport_for
from edgeway.extras import MissingExtraError, extra_for_module, missing, require
from edgeway.gateway.config import ConfigError, load_config


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _edgeway(*args: str, without: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({list(without)!r}))\n"
        "sys.argv[1:] = " + repr(list(args)) + "\n"
        "from edgeway.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()},
    )


def _pythonpath() -> dict[str, str]:
    import os

    value = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": value} if value else {}


# -- the registry of extras --------------------------------------------------------------------------


def test_an_extra_is_missing_when_a_module_it_or_an_included_extra_installs_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert missing("security") is None
    assert missing("gateway") is None
    _without(monkeypatch, "fastapi")
    # the security extra includes the service extra
    assert missing("security") == "fastapi"
    assert missing("demo") == "fastapi"
    assert missing("redis") is None
    with pytest.raises(MissingExtraError, match=r"pip install 'edgeway\[service\]'") as info:
        require("service", "a service")
    assert info.value.extra == "service"
    assert info.value.name == "fastapi"


def test_a_module_is_mapped_to_the_extra_that_installs_it() -> None:
    assert extra_for_module("sqlalchemy.ext.asyncio") == "service"
    assert extra_for_module("aiormq.exceptions") == "rabbitmq"
    assert extra_for_module("nats.js.kv") == "nats"
    assert extra_for_module("yaml") is None
    assert extra_for_module(None) is None


def test_a_broker_url_whose_client_is_missing_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "nats", "aio_pika")
    with pytest.raises(MissingExtraError, match=r"nats://127\.0\.0\.1:4222.*pip install 'edgeway\[nats\]'"):
        transport_for("nats://127.0.0.1:4222")
    with pytest.raises(MissingExtraError, match=r"pip install 'edgeway\[rabbitmq\]'") as info:
        transport_for("amqp://guest:secret@127.0.0.1:5672/")
    assert "secret" not in str(info.value)


# -- gateway configs -------------------------------------------------------------------------------

CONFIG = """\
listen: {host: 127.0.0.1, port: 8080}
auth:
  jwks_url: http://127.0.0.1:9/jwks.json
  issuer: https://auth.example.com
  audience: api
  revocations:
    url: http://127.0.0.1:9/revocations
    bus: {url: "nats://127.0.0.1:4222"}
rate_limits:
  backend: redis
cache:
  redis: {url: "redis://127.0.0.1:6379/0"}
push:
  bus:
    transport: rabbitmq
    url: amqp://127.0.0.1:5672/
    channels: [{channel: jobs, topic: "jobs/{job_id}"}]
services:
  api:
    instances: ["http://127.0.0.1:9"]
  registry:
    discovery:
      nats_kv: {url: "nats://127.0.0.1:4222", bucket: edgeway_registry, service: registry}
routes:
  - match: {path: /**}
    proxy: {service: api}
"""


def test_a_config_using_features_whose_extras_are_missing_is_refused_naming_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    load_config(path)  # with every extra installed (the dev environment) it is valid
    _without(monkeypatch, "redis", "nats", "aio_pika")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = {(issue.line, issue.key_path): issue.message for issue in info.value.issues}
    assert found == {
        (8, "auth.revocations.bus.url"): (
            "revocation push needs the 'nats' extra (nats is not installed): pip install 'edgeway[nats]'"
        ),
        (10, "rate_limits.backend"): (
            "the redis rate-limit backend needs the 'redis' extra (redis is not installed): "
            "pip install 'edgeway[redis]'"
        ),
        (12, "cache.redis"): (
            "the shared (redis) cache needs the 'redis' extra (redis is not installed): "
            "pip install 'edgeway[redis]'"
        ),
        (15, "push.bus.transport"): (
            "push from the event bus needs the 'rabbitmq' extra (aio_pika is not installed): "
            "pip install 'edgeway[rabbitmq]'"
        ),
        (23, "services.registry.discovery.nats_kv"): (
            "NATS KV discovery needs the 'nats' extra (nats is not installed): pip install 'edgeway[nats]'"
        ),
    }


def test_config_check_names_the_missing_extra(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            rate_limits: {backend: redis}
            services: {api: {instances: ["http://127.0.0.1:9"]}}
            routes: [{match: {path: /**}, proxy: {service: api}}]
            """
        )
    )
    done = _edgeway("config", "check", str(path), without=("redis",), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"{path}:1:15: rate_limits.backend: the redis rate-limit backend needs the 'redis' extra "
        "(redis is not installed): pip install 'edgeway[redis]'"
    )


def test_gateway_tracing_without_the_tracing_extra_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("telemetry:\n  tracing:\n    enabled: true\n")
    load_config(path)
    _without(monkeypatch, "opentelemetry.sdk")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    ((issue),) = info.value.issues
    assert (issue.line, issue.key_path) == (3, "telemetry.tracing.enabled")
    assert issue.message == (
        "OpenTelemetry tracing needs the 'tracing' extra (opentelemetry.sdk is not installed): "
        "pip install 'edgeway[tracing]'"
    )
    # metrics need nothing beyond the base install, and a gateway without tracing never imports it
    path.write_text("telemetry:\n  metrics:\n    enabled: true\n")
    load_config(path)


def test_the_push_bus_source_loads_with_only_the_client_of_its_broker(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['aio_pika'] = None\n"
        "from edgeway.gateway.actions.push.bus_source import BusSource\n"
        "print(BusSource.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "BusSource"


# -- the command line ------------------------------------------------------------------------------


def test_a_command_whose_extra_is_missing_stays_listed_and_says_what_to_install(tmp_path: Path) -> None:
    listed = _edgeway("--help", without=("fastapi",), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "security" in listed.stdout
    assert "Needs the 'security' extra, not installed." in listed.stdout
    assert "Needs the 'demo' extra, not installed." in listed.stdout
    assert "gateway" in listed.stdout

    for args, extra in (
        (("security", "serve", "--port", "1"), "security"),
        (("security", "--help"), "security"),
        (("saga", "list"), "service"),
        (("demo",), "demo"),
    ):
        done = _edgeway(*args, without=("fastapi",), cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert f"pip install 'edgeway[{extra}]'" in done.stderr, args
        assert "Traceback" not in done.stderr


def test_a_command_reaching_a_missing_broker_client_says_which_extra(tmp_path: Path) -> None:
    done = _edgeway(
        "bus", "dlq", "list", "-c", "orders", "--url", "nats://127.0.0.1:9", without=("nats",), cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "edgeway: the broker at nats://127.0.0.1:9 needs the 'nats' extra (nats is not installed): "
        "pip install 'edgeway[nats]'"
    )


def test_the_security_service_names_the_extra_of_its_database_and_broker_before_starting(
    tmp_path: Path,
) -> None:
    done = _edgeway(
        "security", "serve", "--db", "postgresql+asyncpg://u:secret@127.0.0.1:9/x", "--port", "1",
        without=("asyncpg",), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "edgeway: db_url postgresql+asyncpg://… needs the 'postgres' extra (asyncpg is not installed): "
        "pip install 'edgeway[postgres]'"
    )
    config = tmp_path / "security.yaml"
    config.write_text("bus_url: amqp://127.0.0.1:9/\n")
    done = _edgeway("security", "serve", "--config", str(config), without=("aio_pika",), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "edgeway: bus_url needs the 'rabbitmq' extra (aio_pika is not installed): "
        "pip install 'edgeway[rabbitmq]'"
    )


def test_scaffolding_without_copier_says_to_install_the_scaffold_extra(tmp_path: Path) -> None:
    done = _edgeway("new", "service", "billing", "--dir", str(tmp_path), without=("copier",), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "edgeway: `edgeway new` needs the 'scaffold' extra (copier is not installed): "
        "pip install 'edgeway[scaffold]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_compiling_protos_without_grpcio_tools_says_to_install_the_proto_extra(tmp_path: Path) -> None:
    done = _edgeway("proto", "compile", str(tmp_path), without=("grpc_tools",), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "edgeway: `edgeway proto` needs the 'proto' extra (grpc_tools is not installed): "
        "pip install 'edgeway[proto]'"
    )


async def test_serving_grpc_without_grpcio_names_the_grpc_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeway.service import ServiceSettings, create_app
    from edgeway.service.app import kit_of

    _without(monkeypatch, "grpc")
    kit = kit_of(create_app("ledger", settings=ServiceSettings(grpc_port=50051), configure_logging=False))
    with pytest.raises(MissingExtraError, match=r"pip install 'edgeway\[grpc\]'"):
        await kit.start_grpc()
    with pytest.raises(MissingExtraError, match="calling inventory over gRPC"):
        kit.grpc_client("inventory", lambda channel: channel)
