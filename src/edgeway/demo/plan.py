"""What ``edgeway demo`` runs: every process of the shop, its command, environment, port and readiness.

The plan is data (:class:`ProcessSpec` per process) built from the ports and the data directory,
so the CLI, the tests and a reader see the whole system in one place. Processes are started in
dependency order (``after``): the broker first, then the security service (the others fetch its
JWKS at start), then the services, then the edges.

Ports have names (``catalog-1``, ``web-bff`` ...) and defaults; ``--port NAME=PORT`` changes one.
The edge configs (``shop/edges/*.yaml``) read them from ``SHOP_PORT_<NAME>`` variables, which is
also how they run outside the demo.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgeway.bus.embedded import EmbeddedNats
from edgeway.gateway.process.admin_auth import TOKEN_ENV

__all__ = [
    "DEFAULT_PORTS",
    "EDGES_DIR",
    "PATTERNS",
    "FileReady",
    "HttpReady",
    "Pattern",
    "ProcessSpec",
    "ShopPlan",
    "TcpReady",
    "port_env_name",
]

Pattern = Literal["all", "direct", "gateway", "bff"]
PATTERNS: tuple[Pattern, ...] = ("all", "direct", "gateway", "bff")

EDGES_DIR = Path(__file__).parent / "shop" / "edges"

# name -> default port. The embedded NATS is not on 4222: a system NATS often is.
DEFAULT_PORTS: dict[str, int] = {
    "nats": 14222,
    "security": 8400,
    "catalog-1": 8101,
    "catalog-2": 8102,
    "inventory": 8103,
    "orders": 8104,
    "payments": 8105,
    "notifications": 8106,
    "profile": 8107,
    "legacy": 8108,
    "web": 8090,
    "gateway": 8080,
    "gateway-admin": 8180,
    "web-bff": 8081,
    "web-bff-admin": 8181,
    "mobile-bff": 8082,
    "mobile-bff-admin": 8182,
    "control": 8070,  # the control room (edgeway.demo.control), in the demo's own process
}

CONFIG_BUCKET = "shop_config"
REGISTRY_BUCKET = "shop_registry"
BUS_PREFIX = "shop"


@dataclass(frozen=True, slots=True)
class HttpReady:
    """Ready when ``GET url`` answers 200."""

    url: str


@dataclass(frozen=True, slots=True)
class TcpReady:
    """Ready when the port accepts a connection."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class FileReady:
    """Ready when the file exists (a process whose work product is a file)."""

    path: Path


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready: HttpReady | TcpReady | FileReady
    after: tuple[str, ...] = ()
    role: Literal["broker", "core", "service", "edge"] = "service"
    url: str | None = None  # what a person opens, printed when everything is ready
    cwd: Path | None = None


def port_env_name(name: str) -> str:
    return "SHOP_PORT_" + name.upper().replace("-", "_")


@dataclass
class ShopPlan:
    """Every process for one pattern, on loopback, with ``data_dir`` for databases and logs."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    pattern: Pattern = "all"
    host: str = "127.0.0.1"
    email_delay: float = 0.3
    log_level: str = "info"
    # The edges' admin token, one for the demo: the edges and the strangler (which asks them to
    # reload) get it as EDGEWAY_ADMIN_TOKEN.
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # The control room: its page, and the OTLP receiver every process exports its spans to.
    control_room: bool = True

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.ports['nats']}"

    @property
    def security_url(self) -> str:
        return self.url("security")

    def web_origins(self) -> list[str]:
        """Where the web app is served from in the Direct pattern: the origins services allow."""
        return [self.url("web"), f"http://localhost:{self.ports['web']}"]

    def port_env(self) -> dict[str, str]:
        """``SHOP_PORT_<NAME>`` for every port: what the edge configs interpolate."""
        env = {port_env_name(name): str(port) for name, port in self.ports.items()}
        env["SHOP_HOST"] = self.host
        return env

    def used_ports(self) -> dict[str, int]:
        """The ports the processes of this pattern bind."""
        names = {spec.name for spec in self.processes()}
        used = {name: port for name, port in self.ports.items() if name in names}
        for edge in ("gateway", "web-bff", "mobile-bff"):
            if edge in names:
                used[f"{edge}-admin"] = self.ports[f"{edge}-admin"]
        if self.control_room:
            used["control"] = self.ports["control"]
        return used

    def edges(self) -> list[str]:
        return {
            "all": ["gateway", "web-bff", "mobile-bff"],
            "direct": [],
            "gateway": ["gateway"],
            "bff": ["web-bff", "mobile-bff"],
        }[self.pattern]

    # -- the processes ---------------------------------------------------------------------------

    def processes(self) -> list[ProcessSpec]:
        specs = [self._nats(), self._security()]
        specs += [self._service(name) for name in SERVICES]
        specs.append(self._legacy())
        specs.append(self._web())
        if self.edges():
            specs.append(self._strangler())
        specs += [self._edge(name) for name in self.edges()]
        return specs

    @property
    def strangler_file(self) -> Path:
        return self.data_dir / "strangler.yaml"

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.port_env())
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "EDGEWAY_LOG_LEVEL": self.log_level,
                "EDGEWAY_HOST": self.host,
                "EDGEWAY_DATA_DIR": str(self.data_dir),
                "EDGEWAY_NATS_URL": self.nats_url,
                "EDGEWAY_BUS_PREFIX": BUS_PREFIX,
            }
        )
        if self.control_room:
            env.update(self.control_env())
        return env

    def control_env(self) -> dict[str, str]:
        """Spans to the control room's OTLP receiver, in small batches (seen within a second),
        never holding a process's shutdown long."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url("control"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "300",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        }

    def _nats(self) -> ProcessSpec:
        server = EmbeddedNats(port=self.ports["nats"], host=self.host, data_dir=self.data_dir / "nats")
        return ProcessSpec(
            "nats",
            tuple(server.command()),
            self._base_env(),
            TcpReady(self.host, self.ports["nats"]),
            role="broker",
            url=self.nats_url,
        )

    def _security(self) -> ProcessSpec:
        env = self._base_env()
        env.update(
            {
                "EDGEWAY_PORT": str(self.ports["security"]),
                "EDGEWAY_SECURITY_DB_URL": f"sqlite+aiosqlite:///{self.data_dir / 'security.db'}",
                "EDGEWAY_SECURITY_KEYS_PATH": str(self.data_dir / "security-keys.json"),
                "EDGEWAY_SECURITY_PUBLIC_URL": self.security_url,
                "EDGEWAY_SECURITY_BUS_URL": self.nats_url,
                "EDGEWAY_SECURITY_BUS_PREFIX": BUS_PREFIX,
                "EDGEWAY_SECURITY_CORS_ORIGINS": json.dumps(self.web_origins()),
            }
        )
        return ProcessSpec(
            "security",
            (sys.executable, "-m", "edgeway.demo.shop.security"),
            env,
            HttpReady(f"{self.security_url}/healthz"),
            after=("nats",),
            role="core",
            url=f"{self.security_url}/.well-known/openid-configuration",
        )

    def _service_env(self, name: str, port_name: str) -> dict[str, str]:
        env = self._base_env()
        env.update(
            {
                "EDGEWAY_SERVICE_NAME": name,
                "EDGEWAY_INSTANCE_ID": port_name,
                "EDGEWAY_PORT": str(self.ports[port_name]),
                "EDGEWAY_ADVERTISE_URL": self.url(port_name),
                "EDGEWAY_REGISTRY_BUCKET": REGISTRY_BUCKET,
                "EDGEWAY_REGISTRY_TTL": "10",
                "EDGEWAY_CONFIG_BUCKET": CONFIG_BUCKET,
                "EDGEWAY_CONFIG_CACHE_DIR": str(self.data_dir / "cache" / port_name),
                "EDGEWAY_JWKS_URL": f"{self.security_url}/.well-known/jwks.json",
                "EDGEWAY_SECURITY_URL": self.security_url,
                "EDGEWAY_CORS_ORIGINS": json.dumps(self.web_origins()),
                "EDGEWAY_SHUTDOWN_GRACE": "0",
                "EDGEWAY_EMAIL_DELAY": str(self.email_delay),
            }
        )
        return env

    def _service(self, port_name: str) -> ProcessSpec:
        module = port_name.split("-")[0] if port_name.startswith("catalog") else port_name
        return ProcessSpec(
            port_name,
            (sys.executable, "-m", f"edgeway.demo.shop.{module}"),
            self._service_env(module, port_name),
            HttpReady(f"{self.url(port_name)}/health/ready"),
            after=("nats", "security"),
            url=f"{self.url(port_name)}/docs",
        )

    def _legacy(self) -> ProcessSpec:
        return ProcessSpec(
            "legacy",
            (sys.executable, "-m", "edgeway.demo.shop.legacy"),
            self._service_env("legacy", "legacy"),
            HttpReady(f"{self.url('legacy')}/health"),
            after=("security",),
            url=self.url("legacy"),
        )

    def _web(self) -> ProcessSpec:
        env = self._base_env()
        env.update({"EDGEWAY_PORT": str(self.ports["web"]), "SHOP_EDGES": ",".join(self.edges())})
        if self.control_room:
            env["SHOP_CONTROL_URL"] = self.url("control")
        return ProcessSpec(
            "web",
            (sys.executable, "-m", "edgeway.demo.shop.web"),
            env,
            HttpReady(f"{self.url('web')}/health"),
            role="edge",
            url=self.url("web"),
        )

    def _strangler(self) -> ProcessSpec:
        env = self._base_env()
        env.update(
            {
                "SHOP_STRANGLER_FILE": str(self.strangler_file),
                "SHOP_RELOAD_URLS": ",".join(f"{self.url(e + '-admin')}/reload" for e in self.edges()),
                TOKEN_ENV: self.admin_token,
                "EDGEWAY_CONFIG_BUCKET": CONFIG_BUCKET,
                "EDGEWAY_CONFIG_CACHE_DIR": str(self.data_dir / "cache" / "strangler"),
            }
        )
        return ProcessSpec(
            "strangler",
            (sys.executable, "-m", "edgeway.demo.strangler"),
            env,
            FileReady(self.strangler_file),
            after=("nats",),
            role="edge",
        )

    def _edge(self, name: str) -> ProcessSpec:
        config = EDGES_DIR / f"{name}.yaml"
        env = self._base_env()
        env["SHOP_STRANGLER_FILE"] = str(self.strangler_file)
        env[TOKEN_ENV] = self.admin_token
        return ProcessSpec(
            name,
            (sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(config)),
            env,
            HttpReady(f"{self.url(name + '-admin')}/readyz"),
            # The edges health-check and discover the services: start them once those are up,
            # so no instance starts its life in the edges' eyes as "unhealthy".
            after=("security", "strangler", *SERVICES, "legacy", "web"),
            role="edge",
            url=self.url(name),
        )


SERVICES = ("catalog-1", "catalog-2", "inventory", "orders", "payments", "notifications", "profile")


def parse_ports(values: Iterable[str]) -> dict[str, int]:
    """``NAME=PORT`` items (from ``--port``) merged over the defaults; errors name the bad item."""
    ports = dict(DEFAULT_PORTS)
    for item in values:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_PORTS:
            known = ", ".join(DEFAULT_PORTS)
            raise ValueError(f"--port {item!r}: expected NAME=PORT with NAME one of {known}")
        try:
            port = int(raw)
        except ValueError:
            raise ValueError(f"--port {item!r}: {raw!r} is not a port number") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"--port {item!r}: a port is between 1 and 65535")
        ports[name] = port
    clashes: dict[int, list[str]] = {}
    for name, port in ports.items():
        clashes.setdefault(port, []).append(name)
    doubled = {port: names for port, names in clashes.items() if len(names) > 1}
    if doubled:
        text = "; ".join(f"{port}: {', '.join(names)}" for port, names in doubled.items())
        raise ValueError(f"two processes would share a port ({text})")
    return ports
