"""What ``edgeway demo`` runs: every process of a system, its command, environment, port and readiness.

A system is described by its system file (:mod:`edgeway.system`): services, instances, ports,
edges, the broker. The reference shop's is ``shop/edgeway.system.yaml``; ``edgeway demo --system
FILE`` runs any other (a repository ``edgeway new`` made). The plan is that file placed on this
machine (:class:`ProcessSpec` per process, built from the ports and the data directory): every
process on loopback, SQLite files in the data directory, an embedded NATS, the service registry
when the file names one. The deploy targets (``edgeway deploy render``) read the same file, so the
laptop and the cluster cannot drift. Processes are started in dependency order (``after``): the
broker first, then the security service (the others fetch its JWKS at start), then the services,
then the edges. A service with a ``path`` (its project folder) runs with that folder's ``src/`` on
the Python path. For the shop, and only for it, the demo runs its own helper besides the system,
the strangler controller (:mod:`edgeway.demo.strangler`), and gives the shop's services the
settings of its story (the e-mail delay, the web app's origins).

Ports have names (``catalog-1``, ``web-bff`` ...) and defaults from the system file; ``--port
NAME=PORT`` changes one. The edge configs (``shop/edges/*.yaml``) read where everything is from
``SHOP_URL_<NAME>`` and what to bind from ``SHOP_HOST`` and ``SHOP_PORT_<NAME>``, which is also
how they run outside the demo.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from edgeway.bus.embedded import EmbeddedNats
from edgeway.demo.tls import DemoCertificates
from edgeway.gateway.process.admin_auth import TOKEN_ENV
from edgeway.system import (
    LoadedSystem,
    Placement,
    edge_env,
    grpc_port_name,
    instance_names,
    load_system,
    local_placement,
    process_ports,
    service_env,
    wiring_env,
)
from edgeway.system.model import Pattern, System

__all__ = [
    "DEFAULT_PORTS",
    "EDGES_DIR",
    "PATTERNS",
    "SYSTEM_FILE",
    "FileReady",
    "HttpReady",
    "Pattern",
    "ProcessSpec",
    "ShopPlan",
    "TcpReady",
    "port_env_name",
    "shop_system",
]

PATTERNS: tuple[Pattern, ...] = ("all", "direct", "gateway", "bff")

SHOP_DIR = Path(__file__).parent / "shop"
SYSTEM_FILE = SHOP_DIR / "edgeway.system.yaml"
EDGES_DIR = SHOP_DIR / "edges"


@functools.cache
def shop_system() -> LoadedSystem:
    """The shop's system file, read once (the environment plays no part in it)."""
    return load_system(SYSTEM_FILE, env={})


# name -> default port, from the system file: the broker, each instance, each edge and its admin;
# and the control room (edgeway.demo.control), which the demo's own process serves.
DEFAULT_PORTS: dict[str, int] = {**process_ports(shop_system().model), "control": 8070}

_BROKER = shop_system().model.broker
CONFIG_BUCKET = _BROKER.config_bucket or "shop_config"
REGISTRY_BUCKET = _BROKER.registry_bucket or "shop_registry"
BUS_PREFIX = _BROKER.prefix


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
    system_file: LoadedSystem = field(default_factory=shop_system)
    # HTTPS everywhere and mTLS to the services (edgeway.demo.tls); the certificates are in
    # certificates.directory, made by edgeway.demo.tls.demo_certificates before the processes start.
    tls: bool = False

    @property
    def certificates(self) -> DemoCertificates:
        return DemoCertificates(self.data_dir / "tls")

    def https_names(self) -> set[str]:
        """The processes that serve HTTPS: with ``tls``, every instance of a service and every edge
        (their admin ports and NATS stay as they are)."""
        if not self.tls:
            return set()
        names = {i for name in self.system.services for i in instance_names(self.system, name)}
        return names | set(self.system.edges)

    def edge_services(self) -> list[str]:
        """The services the edge configs declare (services.yaml), which the TLS overlay gives a
        CA and client certificate."""
        return list(yaml.safe_load((EDGES_DIR / "services.yaml").read_text())["services"])

    @property
    def system(self) -> System:
        return self.system_file.model

    @property
    def is_shop(self) -> bool:
        """The reference shop's own file: the demo adds the shop's helper and settings."""
        return self.system_file.path == SYSTEM_FILE.resolve()

    def url(self, name: str) -> str:
        scheme = "https" if name in self.https_names() else "http"
        return f"{scheme}://{self.host}:{self.ports[name]}"

    @property
    def nats_url(self) -> str:
        return self.placement().nats_url

    @property
    def security_url(self) -> str:
        return self.url(self.system.security_services()[0])

    def web_origins(self) -> list[str]:
        """Where the web app is served from in the Direct pattern: the origins services allow."""
        if not self.is_shop or "web" not in self.ports:
            return []
        return [self.url("web"), self.url("web").replace(self.host, "localhost")]

    def placement(self) -> Placement:
        """The system placed on this machine: loopback, SQLite files, the registry."""
        return local_placement(
            self.system,
            str(self.data_dir),
            ports=self.ports,
            host=self.host,
            cors_origins=self.web_origins(),
            log_level=self.log_level,
            https=self.https_names(),
        )

    def port_env(self) -> dict[str, str]:
        """``SHOP_PORT_<NAME>`` for every port, ``SHOP_URL_<NAME>`` for every process and
        ``SHOP_HOST``: what the edge configs interpolate."""
        prefix = self.system.prefix
        return {
            k: v for k, v in wiring_env(self.system, self.placement()).items() if k.startswith(prefix + "_")
        }

    def used_ports(self) -> dict[str, int]:
        """The ports the processes of this pattern bind."""
        names = {spec.name for spec in self.processes()}
        used = {name: port for name, port in self.ports.items() if name in names}
        for edge in self.system.edges:
            if edge in names:
                used[f"{edge}-admin"] = self.ports[f"{edge}-admin"]
        if self.serves_control_room:
            used["control"] = self.ports["control"]
        return used

    def edges(self) -> list[str]:
        return self.system.edges_of(self.pattern)

    # -- the processes ---------------------------------------------------------------------------

    def processes(self) -> list[ProcessSpec]:
        placement = self.placement()
        specs = [] if self.system.broker.nats.external_url is not None else [self._nats()]
        for name in self.system.services:
            specs += [
                self._service(placement, name, instance) for instance in instance_names(self.system, name)
            ]
        if self.edges() and self.is_shop:
            specs.append(self._strangler())
        specs += [self._edge(placement, name) for name in self.edges()]
        return specs

    @property
    def strangler_file(self) -> Path:
        return self.data_dir / "strangler.yaml"

    @property
    def strangler_state_file(self) -> Path:
        """Where the edges share their strangler rules' state (``strangler_store``)."""
        return self.data_dir / "strangler-state.json"

    def _env(self, own: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(own)
        env["SHOP_EDGES"] = ",".join(self.edges())  # the web page links the other pattern
        if self.serves_control_room:
            env.update(self.control_env())
        return env

    @property
    def serves_control_room(self) -> bool:
        """On, and with a port (a plan built from a system file's ports alone has none)."""
        return self.control_room and "control" in self.ports

    def control_env(self) -> dict[str, str]:
        """Spans to the control room's OTLP receiver, in small batches (seen within a second),
        never holding a process's shutdown long; and where the control room is, for the page."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url("control"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "300",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
            "SHOP_CONTROL_URL": self.url("control"),
            "SHOP_TRACING": "true",  # the edges' spans too (shop/edges/telemetry.yaml)
        }

    def _broker_names(self) -> tuple[str, ...]:
        return () if self.system.broker.nats.external_url is not None else ("nats",)

    def _nats(self) -> ProcessSpec:
        server = EmbeddedNats(port=self.ports["nats"], host=self.host, data_dir=self.data_dir / "nats")
        return ProcessSpec(
            "nats",
            tuple(server.command()),
            self._env(wiring_env(self.system, self.placement())),
            TcpReady(self.host, self.ports["nats"]),
            role="broker",
            url=self.nats_url,
        )

    def _after(self, name: str) -> tuple[str, ...]:
        """What a service waits for: its ``after`` (``broker`` is the embedded NATS), by default
        the broker and, for kit services, the security service."""
        service = self.system.services[name]
        if service.after is not None:
            wanted = list(service.after)
        elif service.kind == "kit":
            wanted = ["broker", *self.system.security_services()]
        elif service.kind == "security":
            wanted = ["broker"]
        else:
            wanted = []
        after: list[str] = []
        for dep in wanted:
            after += self._broker_names() if dep == "broker" else instance_names(self.system, dep)
        return tuple(after)

    def _service(self, placement: Placement, name: str, instance: str) -> ProcessSpec:
        service = self.system.services[name]
        grpc = self.ports.get(grpc_port_name(instance))
        env = service_env(self.system, placement, name, instance, self.ports[instance], grpc)
        if service.kind == "kit" and self.is_shop:
            env["EDGEWAY_EMAIL_DELAY"] = str(self.email_delay)
        project = self.system_file.service_path(name)
        if project is not None:
            # a project of the repository, not installed: its package comes from its folder
            source = project / "src" if (project / "src").is_dir() else project
            env["PYTHONPATH"] = os.pathsep.join(
                [str(source), *filter(None, [env.get("PYTHONPATH"), os.environ.get("PYTHONPATH")])]
            )
        if self.tls:
            # The kit's services (and the legacy monolith) are reached through the edges only:
            # a client certificate from the demo's CA. The security service and the web app's
            # files are client-facing (the browser, partners), so any client may connect.
            env.update(self.certificates.serving_env(require_client_cert=service.kind == "kit"))
        base = self.url(instance)
        argv = (sys.executable, "-m", service.module) if service.module else tuple(service.command or ())
        role: Literal["core", "service"] = "core" if service.kind == "security" else "service"
        if service.kind == "security":
            shown = f"{base}/.well-known/openid-configuration"
        elif service.kind == "kit" and service.health is None:
            shown = f"{base}/docs"
        else:
            shown = base
        return ProcessSpec(
            instance,
            argv,
            self._env(env),
            HttpReady(base + service.probes().ready),
            after=self._after(name),
            role=role,
            url=shown,
        )

    def _strangler(self) -> ProcessSpec:
        env = self._env(wiring_env(self.system, self.placement()))
        env.update(
            {
                "SHOP_STRANGLER_FILE": str(self.strangler_file),
                "SHOP_ADMIN_URLS": ",".join(self.url(e + "-admin") for e in self.edges()),
                "SHOP_STRANGLER_STATE": str(self.strangler_state_file),
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
            after=self._broker_names(),
            role="edge",
        )

    def _edge(self, placement: Placement, name: str) -> ProcessSpec:
        config = self.system_file.edge_config(name)
        env = self._env(edge_env(self.system, placement, name))
        if self.is_shop:
            env["SHOP_STRANGLER_FILE"] = str(self.strangler_file)
        env[TOKEN_ENV] = self.admin_token
        if self.tls:
            env.update(self.certificates.edge_env())
        # The edges health-check and discover the services: start them once those are up,
        # so no instance starts its life in the edges' eyes as "unhealthy".
        security = self.system.security_services()
        others = [n for n in self.system.services if n not in security]
        after = [i for n in security for i in instance_names(self.system, n)]
        if self.is_shop:
            after.append("strangler")
        after += [i for n in others for i in instance_names(self.system, n)]
        return ProcessSpec(
            name,
            (sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(config)),
            env,
            HttpReady(f"{self.url(name + '-admin')}/readyz"),
            after=tuple(after),
            role="edge",
            url=self.url(name),
        )


def parse_ports(values: Iterable[str], defaults: Mapping[str, int] = DEFAULT_PORTS) -> dict[str, int]:
    """``NAME=PORT`` items (from ``--port``) merged over the defaults (the shop's, or another
    system's :func:`~edgeway.system.process_ports`); errors name the bad item."""
    ports = dict(defaults)
    for item in values:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in defaults:
            known = ", ".join(defaults)
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
