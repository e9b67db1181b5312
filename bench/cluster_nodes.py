"""What runs on which node, with what environment, and the processes themselves.

The shop's processes are the ones ``edgeway demo`` runs (:class:`edgeway.demo.plan.ShopPlan`
builds their commands and environment, one plan per node with the node's address as its host);
the rehearsal changes only what a cluster changes: the NATS URL lists the three servers, streams
get three replicas, each service's database is its PostgreSQL database, the instance ids name
the node, and everyone finds the security service on its node. Every kit service runs on two
nodes, so any one node can go without taking a service with it::

    n1: nats, gateway, catalog, orders, inventory, notifications
    n2: nats, gateway, orders, payments, notifications
    n3: nats, security, catalog, inventory, payments

The security service runs once: the kit takes one ``security_url`` (behind Kubernetes that is a
Service name over the replicas; here there is no virtual address), so it stays on n3, the node
whose only fault is its NATS server being killed. Its tokens are cached where they are used (the
gateways' JWKS, the orders service's client-credentials token), so checkouts do not call it.

The gateways serve the shop's own web-BFF routes (``shop/edges/web-bff.yaml``: login, products,
place an order, read an order) with the shop's service policies (``services.yaml``: discovery from
the NATS KV registry, health checks, breakers, retries) and its token checks (``auth.yaml``),
pointed at the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from bench.cluster_nats import MONITOR_PORT, nats_config
from bench.cluster_net import Network, Node
from bench.cluster_pg import service_url
from bench.errors import ProcessFailed
from bench.gateway import argv as gateway_argv
from bench.harness import python_env
from edgeway.bus.embedded import find_nats_server
from edgeway.demo.plan import EDGES_DIR, ShopPlan
from edgeway.gateway.process.admin_auth import TOKEN_ENV

PLACEMENT: dict[str, tuple[str, ...]] = {
    "n1": ("gateway", "catalog", "orders", "inventory", "notifications"),
    "n2": ("gateway", "orders", "payments", "notifications"),
    "n3": ("security", "catalog", "inventory", "payments"),
}
SERVICES = ("catalog", "orders", "inventory", "payments", "notifications")
GATEWAY_PORT = 8080
GATEWAY_ADMIN_PORT = 8180
# The web BFF's routes the client uses, by id (shop/edges/web-bff.yaml).
ROUTES = ("login", "products", "place-order", "orders")


# One client for every readiness check: a new httpx client per check builds an SSL context
# each time, which a starved machine notices when five restarted processes are polled.
_client: httpx.AsyncClient | None = None


def _checks() -> httpx.AsyncClient:
    global _client
    if _client is None or _client.is_closed:
        _client = httpx.AsyncClient(timeout=1.0)
    return _client


async def close_checks() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


OUTSIDE_NICE = -10


def outside_priority() -> None:
    """Give this process (the client, the probe, the fault driver) priority over the nodes.

    They stand for what is outside the cluster — the shoppers' machines, the load balancer —
    whose CPU is not the nodes'. On one machine they share the cores, and a client starved by
    a restarting node reports its own late timers as connection timeouts. Root only (the
    rehearsal is); the nodes' processes go back to normal priority when they start."""
    os.setpriority(os.PRIO_PROCESS, 0, OUTSIDE_NICE)


def normal_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, 0, 0)


class NodeProcess:
    """A process inside a node's namespace: its own session, a log per start, killed as a group."""

    def __init__(
        self,
        name: str,
        node: Node,
        argv: Sequence[str],
        env: Mapping[str, str],
        ready_url: str,
        log_dir: Path,
    ) -> None:
        self.name = name
        self.node = node
        self.argv = list(argv)
        self.env = dict(env)
        self.ready_url = ready_url
        self.log_dir = log_dir
        self.starts = 0
        self.started_at = 0.0
        self.wanted = False  # started and not stopped on purpose: a Keeper brings it back if it exits
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name}@{self.node.name} {'up' if self.alive() else 'down'}>"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.node.name}.{self.starts}.log"

    def start(self) -> None:
        """Start it in its node, at normal priority (see :func:`outside_priority`)."""
        if self._proc is not None:
            self._reap(0)  # the previous run exited: close its log
        self.starts += 1
        self.wanted = True
        self.started_at = time.monotonic()
        self._log = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.node.exec_argv(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=normal_priority,
            )
        except OSError as exc:
            raise ProcessFailed(self.name, f"cannot start {self.argv[0]}: {exc}") from exc

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    async def ready(self) -> bool:
        try:
            return (await _checks().get(self.ready_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await self.ready():
            if not self.alive():
                raise ProcessFailed(
                    f"{self.name}@{self.node.name}", "exited before it was ready", self.tail()
                )
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{self.name}@{self.node.name}", f"not ready within {timeout:.0f} s", self.tail()
                )
            await asyncio.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crashed process or a dead machine does."""
        self.wanted = False
        self._signal(signal.SIGKILL)
        self._reap(None)

    def stop(self, grace: float = 5.0) -> None:
        self.wanted = False
        self._signal(signal.SIGTERM)
        self._reap(grace)

    def _signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signum)

    def _reap(self, grace: float | None) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                if grace == 0:
                    self._proc = proc  # still running: nothing to reap
                    return
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Keeper:
    """Starts again a process that exits on its own, as kubelet or systemd would on a real node.

    The delay is the demo supervisor's: ``min(30, 0.5 · 2^n)`` seconds, ``n`` counting the
    process's recent restarts (reset once it ran for a minute). A process killed or stopped on
    purpose (:attr:`NodeProcess.wanted` false) is left alone.
    """

    STABLE_AFTER_S = 60.0

    def __init__(self, processes: Sequence[NodeProcess], clock: Callable[[], float]) -> None:
        self.processes = list(processes)
        self.clock = clock
        self.restarts: list[dict[str, Any]] = []
        self._recent: dict[int, int] = {}
        self._due: dict[int, float] = {}

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for p in self.processes:
                key = id(p)
                if not p.wanted or p.alive():
                    self._due.pop(key, None)
                    continue
                due = self._due.get(key)
                if due is None:
                    recent = self._recent.get(key, 0) if now - p.started_at < self.STABLE_AFTER_S else 0
                    delay = min(30.0, 0.5 * 2**recent)
                    self._recent[key] = recent + 1
                    self._due[key] = now + delay
                    self.restarts.append(
                        {
                            "process": f"{p.name}@{p.node.name}",
                            "exited_at": round(self.clock(), 2),
                            "code": p.exit_code,
                            "restart_in_s": delay,
                            "log": p.log_path.name,
                        }
                    )
                elif now >= due:
                    del self._due[key]
                    p.start()
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- the topology


class Topology:
    """Every process of the rehearsal, built (not started) from the network and the run's names."""

    def __init__(
        self, network: Network, run_dir: Path, tag: str, placement: Mapping[str, Sequence[str]]
    ) -> None:
        self.network = network
        self.run_dir = run_dir
        self.tag = tag
        self.placement = {k: tuple(v) for k, v in placement.items()}
        self.admin_token = secrets.token_urlsafe(24)
        self.addresses = [n.ip for n in network.nodes]
        self.nats_url = ",".join(f"nats://{a}:4222" for a in self.addresses)
        security = [n for n in network.nodes if "security" in self.placement.get(n.name, ())]
        if len(security) != 1:
            raise ValueError("the placement must put the security service on exactly one node")
        self.security_node = security[0]
        self.security_url = f"http://{self.security_node.ip}:{ShopPlan(run_dir).ports['security']}"
        self.nats: list[NodeProcess] = []
        self.security: NodeProcess | None = None
        self.services: list[NodeProcess] = []
        self.gateways: list[NodeProcess] = []
        self._build()

    def node_dir(self, node: Node) -> Path:
        return self.run_dir / node.name

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://{g.node.ip}:{GATEWAY_PORT}" for g in self.gateways]

    def maildirs(self) -> list[Path]:
        return [self.node_dir(n) / "maildir" for n in self.network.nodes]

    def on(self, node: Node) -> list[NodeProcess]:
        everything = [*self.nats, *([self.security] if self.security else []), *self.services, *self.gateways]
        return [p for p in everything if p.node == node]

    def _build(self) -> None:
        binary = find_nats_server()
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for node in self.network.nodes:
            directory = self.node_dir(node)
            directory.mkdir(parents=True, exist_ok=True)
            peers = [a for a in self.addresses if a != node.ip]
            conf = directory / "nats.conf"
            conf.write_text(nats_config(node.name, node.ip, peers, directory / "jetstream"))
            self.nats.append(
                NodeProcess(
                    "nats",
                    node,
                    [binary, "-c", str(conf)],
                    python_env(),
                    f"http://{node.ip}:{MONITOR_PORT}/healthz",
                    logs,
                )
            )
            plan = ShopPlan(directory, host=node.ip, log_level="warning", control_room=False)
            specs = {spec.name: spec for spec in plan.processes()}
            for what in self.placement.get(node.name, ()):
                if what == "gateway":
                    self.gateways.append(self._gateway(node, logs))
                elif what == "security":
                    self.security = self._security(node, plan, specs["security"].env, logs)
                else:
                    name = "catalog-1" if what == "catalog" else what
                    spec = specs[name]
                    port = plan.ports[name]
                    env = self.service_env(spec.env, what, node, port)
                    ready = f"http://{node.ip}:{port}/health/ready"
                    self.services.append(NodeProcess(what, node, spec.argv, env, ready, logs))

    def service_env(self, base: Mapping[str, str], service: str, node: Node, port: int) -> dict[str, str]:
        """The demo's environment for ``service`` with what the cluster changes."""
        env = dict(base)
        env.update(
            {
                "EDGEWAY_SERVICE_NAME": service,
                "EDGEWAY_INSTANCE_ID": f"{service}-{node.name}",
                "EDGEWAY_PORT": str(port),
                "EDGEWAY_ADVERTISE_URL": f"http://{node.ip}:{port}",
                "EDGEWAY_NATS_URL": self.nats_url,
                "EDGEWAY_BUS_REPLICAS": "3",
                "EDGEWAY_DATABASE_URL": service_url(self.network.root_ip, self.tag, service),
                "EDGEWAY_SECURITY_URL": self.security_url,
                "EDGEWAY_JWKS_URL": f"{self.security_url}/.well-known/jwks.json",
            }
        )
        return env

    def _security(self, node: Node, plan: ShopPlan, base: Mapping[str, str], logs: Path) -> NodeProcess:
        env = dict(base)
        env.update(
            {
                "EDGEWAY_SECURITY_DB_URL": service_url(self.network.root_ip, self.tag, "security"),
                "EDGEWAY_SECURITY_KEYS_PATH": str(self.node_dir(node) / "security-keys.json"),
                "EDGEWAY_SECURITY_PUBLIC_URL": self.security_url,
            }
        )
        # No bus: the security service declares its channels with one replica whatever the kit's
        # bus_replicas says, and the kit services declare the shared ``users`` channel with three,
        # so the two would keep resizing that stream. Revocations still reach everyone through
        # the /revocations feed; no user events are needed for checkouts.
        env.pop("EDGEWAY_SECURITY_BUS_URL", None)
        spec = {s.name: s for s in plan.processes()}["security"]
        return NodeProcess("security", node, spec.argv, env, f"{self.security_url}/healthz", logs)

    def _gateway(self, node: Node, logs: Path) -> NodeProcess:
        config = gateway_config(f"rehearsal-{node.name}", node.ip, self.nats_url, self.security_url)
        path = self.node_dir(node) / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = python_env({TOKEN_ENV: self.admin_token})
        ready = f"http://{node.ip}:{GATEWAY_ADMIN_PORT}/readyz"
        return NodeProcess("gateway", node, gateway_argv(path), env, ready, logs)


def gateway_config(name: str, address: str, nats_url: str, security_url: str) -> dict[str, Any]:
    """A gateway on ``address`` with the shop's routes, services and auth, pointed at the cluster."""
    services = yaml.safe_load((EDGES_DIR / "services.yaml").read_text())["services"]
    auth = yaml.safe_load((EDGES_DIR / "auth.yaml").read_text())["auth"]
    bff = yaml.safe_load((EDGES_DIR / "web-bff.yaml").read_text())
    kept = {}
    for service in ("catalog", "orders", "inventory"):
        policy = copy.deepcopy(services[service])
        policy["discovery"] = {"nats_kv": {**policy["discovery"]["nats_kv"], "url": nats_url}}
        kept[service] = policy
    kept["security"] = {"instances": [security_url]}
    auth = {
        **auth,
        "jwks_url": f"{security_url}/.well-known/jwks.json",
        # The feed only: the security service runs without a bus here (see Topology._security).
        "revocations": {k: v for k, v in auth["revocations"].items() if k != "bus"}
        | {"url": f"{security_url}/revocations"},
    }
    # The web BFF's own routes and its product routes (an include of web-bff.yaml, one file per
    # inside transport: the rehearsal's services talk JSON over HTTP).
    products = yaml.safe_load((EDGES_DIR / "product-web.http.yaml").read_text())
    by_id = {r["id"]: r for r in [*bff["routes"], *products["routes"]]}
    routes = [by_id[i] for i in ROUTES if i in by_id]
    missing = set(ROUTES) - {r["id"] for r in routes}
    if missing:
        raise ValueError(f"the web BFF's files have no route(s) {', '.join(sorted(missing))}")
    return {
        "version": 1,
        "name": name,
        "listen": {"host": address, "port": GATEWAY_PORT},
        "admin": {"host": address, "port": GATEWAY_ADMIN_PORT},
        "access_log": {"enabled": False},
        "auth": auth,
        "services": kept,
        "routes": routes,
    }
