"""The edgeway gateway as a benchmark target: write its config, run ``edgeway gateway`` as a child.

The gateway runs exactly as a user runs it (the ``edgeway`` console script of this interpreter's
environment), one worker, access logging on; its access log goes to stdout, which the harness
sends to /dev/null so the terminal is not the bottleneck.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bench.harness import ManagedProcess, python_env

GATEWAY_MODULE = "edgeway.gateway.process.cli"


def unavailable_reason() -> str | None:
    """Why the gateway leg cannot run here, or None when it can."""
    try:
        spec = importlib.util.find_spec(GATEWAY_MODULE)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return f"the gateway engine is not built yet ({GATEWAY_MODULE} is missing)"
    return None


def proxy_config(*, port: int, backend_url: str, access_log: bool = True) -> dict[str, Any]:
    """The proxy benchmark's gateway: every path to one backend service."""
    return {
        "version": 1,
        "name": "bench-gateway",
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": None,
        "access_log": {"enabled": access_log},
        "services": {"backend": {"instances": [backend_url]}},
        "routes": [{"id": "all", "match": {"path": "/**"}, "proxy": {"service": "backend"}}],
    }


def write_config(directory: Path, config: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def argv(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("edgeway")
    if script.exists():
        return [str(script), "gateway", "--config", str(config)]
    # No console script (an unusual install): the same entry point through this interpreter.
    return [sys.executable, "-c", "from edgeway.cli import main; main()", "gateway", "--config", str(config)]


def process(directory: Path, config: Mapping[str, Any], name: str = "edgeway") -> ManagedProcess:
    """A not-yet-started gateway serving ``config``; its port is ``config['listen']['port']``."""
    path = write_config(directory, config)
    port = int(config["listen"]["port"])
    scheme = "https" if config["listen"].get("tls") else "http"
    return ManagedProcess(name, argv(path), port=port, log_dir=directory, env=python_env(), scheme=scheme)
