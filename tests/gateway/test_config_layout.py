"""The config model of each filter and action lives next to its code and loads without it.

A config module (``config.py`` in a package, or ``<module>_config.py`` beside a one-module filter
or action) may import the base in ``gateway/config/``, other config modules and the parsers and
constants they validate against; never a filter's, action's or the pipeline's runtime. So
``edgeway config check`` never loads the gateway, and the assembly (``config/schema.py``) can
import every model without an import cycle, whichever module is imported first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgeway.gateway

GATEWAY = Path(edgeway.gateway.__file__).parent

# Besides config modules and package __init__ files: what a config module may load.
ALLOWED = {
    "config.base",
    "config.keypath",
    "config.patterns",
    "config.units",
    "core.errors",  # ConfigError, raised by validators
    "upstream.forwarding",  # the header names a composed call may not copy
    "actions.aggregate.checks",  # the load-time checks of an aggregate's calls
    "actions.aggregate.templates",  # template and dotted-path parsing
    "actions.push.topics",  # topic pattern parsing
    "actions.push.messages",  # re-exported by the push package (its public API)
    "actions.push.sources",
}


def _config_modules() -> list[str]:
    found = [*GATEWAY.rglob("config.py"), *GATEWAY.rglob("*_config.py")]
    names = [".".join(path.relative_to(GATEWAY).with_suffix("").parts) for path in found]
    return sorted(name for name in names if not name.startswith("config."))


def test_every_capability_has_its_config_module() -> None:
    assert _config_modules() == [
        "actions.aggregate.config",
        "actions.endpoints.config",
        "actions.proxy_config",
        "actions.push.config",
        "actions.transcode.config",
        "core.config",
        "filters.auth.config",
        "filters.cache.config",
        "filters.client_cert_config",
        "filters.concurrency_config",
        "filters.cors_config",
        "filters.ratelimit.config",
        "filters.validation_config",
        "process.config",
        "telemetry.config",
        "tls.config",
        "traffic.config",
        "traffic.strangler_config",
        "upstream.config",
    ]
    assert not (GATEWAY / "config" / "compose_schema.py").exists()


@pytest.mark.parametrize("module", _config_modules())
def test_config_module_loads_without_runtime_code(module: str) -> None:
    # A fresh interpreter: what this module alone pulls in, imported first (the cycle case).
    script = (
        "import importlib, json, sys\n"
        f"importlib.import_module('edgeway.gateway.{module}')\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('edgeway.gateway.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = [name.removeprefix("edgeway.gateway.") for name in json.loads(out.stdout)]
    packages = {".".join(path.relative_to(GATEWAY).parts[:-1]) for path in GATEWAY.rglob("__init__.py")}
    unexpected = [
        name
        for name in loaded
        if name not in ALLOWED
        and name not in packages
        and not name.endswith((".config", "_config"))
        and name != module
    ]
    assert unexpected == [], f"{module} loads runtime code: {unexpected}"


def test_assembly_first_then_a_model_module_gives_the_same_classes() -> None:
    # The other order: the assembly first, then a model module, must give the same classes.
    script = (
        "from edgeway.gateway.config.schema import GatewayConfig, Route\n"
        "from edgeway.gateway.filters.auth.config import RouteAuth\n"
        "from edgeway.gateway.upstream.config import Service\n"
        "assert Route.model_fields['auth'].annotation == RouteAuth | None\n"
        "assert GatewayConfig.model_fields['services'].annotation == dict[str, Service]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
