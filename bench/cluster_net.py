"""Three "nodes" on one machine: network namespaces on a bridge, cut off and joined again on demand.

Each node is a network namespace with one veth pair whose other end sits on a bridge in the root
namespace; the bridge holds the root's own address on the subnet (``.254``), which is how the
nodes reach what runs outside them (PostgreSQL, through :mod:`bench.cluster_pg`) and how the
benchmark's client reaches the nodes::

    root namespace: bridge ewc<pid>br 10.77.0.254 ── ewc<pid>v1 ══ eth0 10.77.0.1  (ns ewc<pid>-n1)
                                                  ├─ ewc<pid>v2 ══ eth0 10.77.0.2  (ns ewc<pid>-n2)
                                                  └─ ewc<pid>v3 ══ eth0 10.77.0.3  (ns ewc<pid>-n3)

A partition sets the root end of a node's veth down: the node keeps its address and routes, its
packets go nowhere — a pulled cable, not a tidy ``ENETUNREACH``.

Names carry the benchmark's pid, so leftovers of a run that was SIGKILLed (no handler runs then)
are recognised by the next run and removed (:func:`stale_names`, :func:`remove_stale`). Every
step that creates something registers its undo on a :class:`Teardown`, which runs on the normal
way out, on an exception, on SIGINT/SIGTERM/SIGHUP and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType

from bench.errors import BenchError

log = logging.getLogger("bench.cluster")

__all__ = [
    "Network",
    "Node",
    "Teardown",
    "preflight",
    "remove_stale",
    "stale_names",
]

PREFIX = "ewc"
_OWNED = re.compile(rf"^{PREFIX}(\d+)(?:-n\d+|br|v\d+)$")


class NotPermitted(BenchError):
    """The rehearsal cannot run here (not root, no ``ip netns``); the message says what to do."""


# --------------------------------------------------------------------------- teardown


class Teardown:
    """Undo steps run last-registered first, once, whatever ends the run.

    Each step runs even when an earlier one fails (its error is logged and kept in
    :attr:`errors`): a namespace that cannot be deleted must not leave the bridge behind.
    :meth:`install` makes SIGTERM and SIGHUP raise ``SystemExit`` (SIGINT already raises
    ``KeyboardInterrupt``), so ``finally`` blocks run, and registers :meth:`run` with ``atexit``
    for a way out that skipped them.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self.errors: list[str] = []
        self._previous: dict[int, object] = {}

    def push(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def __len__(self) -> int:
        return len(self._steps)

    def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing: the rest must not stay behind
                self.errors.append(f"{what}: {exc}")
                log.warning("cleanup: %s failed: %s", what, exc)

    def install(self) -> None:
        atexit.register(self.run)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, _exit_on_signal)

    def uninstall(self) -> None:
        atexit.unregister(self.run)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- commands


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; a failure raises :class:`BenchError` with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BenchError(f"ip {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def preflight() -> None:
    """Refuse, saying why, where the rehearsal cannot run: it needs root and ``ip netns``."""
    if sys.platform != "linux":
        raise NotPermitted("bench cluster needs Linux network namespaces; this is " + sys.platform)
    if os.geteuid() != 0:
        raise NotPermitted(
            "bench cluster needs root: it creates network namespaces, veth pairs and a bridge "
            "(run it as root, e.g. `sudo ./dev bench cluster`)"
        )
    if shutil.which("ip") is None:
        raise NotPermitted("bench cluster needs the ip command: apt-get install iproute2")
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NotPermitted(
            f"`ip netns add` does not work here ({done.stderr.strip()}); network namespaces are needed "
            "(a container needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        )
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


# --------------------------------------------------------------------------- leftovers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_names(names: Iterable[str], alive: Callable[[int], bool] = _alive) -> list[str]:
    """The rehearsal's namespaces and links among ``names`` whose run (pid in the name) is gone."""
    stale = []
    for name in names:
        found = _OWNED.match(name)
        if found is not None and not alive(int(found.group(1))):
            stale.append(name)
    return stale


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _links() -> list[str]:
    # "3: ewc123br: <BROADCAST,...>" or "4: ewc123v1@if2: <...>"
    names = []
    for line in ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def kill_namespace_processes(ns: str) -> list[int]:
    """SIGKILL every process inside namespace ``ns``; returns their pids."""
    pids = [int(p) for p in ip("netns", "pids", ns, check=False).split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def remove_stale() -> list[str]:
    """Delete namespaces and links left by rehearsals that died without cleaning up."""
    removed = []
    for ns in stale_names(_namespaces()):
        kill_namespace_processes(ns)
        ip("netns", "del", ns, check=False)
        removed.append(ns)
    for link in stale_names(_links()):
        ip("link", "del", link, check=False)
        removed.append(link)
    return removed


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True, slots=True)
class Node:
    name: str  # n1, n2, n3
    ns: str  # the network namespace
    ip: str
    veth: str  # the root end of its veth pair: down = cut off

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this node's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]


class Network:
    """The bridge, the namespaces and their links for one run (``tag`` makes the names unique)."""

    def __init__(self, subnet: str = "10.77.0.0/24", nodes: int = 3, tag: str | None = None) -> None:
        net = ipaddress.ip_network(subnet)
        if net.prefixlen > 29 or nodes < 1 or nodes > 9:
            raise BenchError(f"subnet {subnet} with {nodes} nodes: use a /24 and 1..9 nodes")
        self.subnet = net
        self.tag = tag or f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        hosts = list(net.hosts())
        self.root_ip = str(hosts[-1])  # .254 on a /24
        self.nodes = [
            Node(f"n{i}", f"{self.tag}-n{i}", str(hosts[i - 1]), f"{self.tag}v{i}")
            for i in range(1, nodes + 1)
        ]
        for name in (self.bridge, *(n.veth for n in self.nodes)):
            if len(name) > 15:
                raise BenchError(f"interface name {name!r} is longer than Linux allows (15)")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def _check_free(self) -> None:
        used = ip("-o", "-4", "addr", "show")
        for line in used.splitlines():
            fields = line.split()
            if "inet" in fields:
                iface = fields[1]
                address = ipaddress.ip_interface(fields[fields.index("inet") + 1])
                if address.network.overlaps(self.subnet):
                    raise BenchError(
                        f"{self.subnet} is already in use on {iface} ({address}): another rehearsal "
                        "running? Pass another --subnet, or remove it (`python -m bench cluster --clean`)"
                    )

    def up(self, teardown: Teardown) -> None:
        """Create the bridge and the nodes; each creation registers its removal on ``teardown``."""
        self._check_free()
        ip("link", "add", self.bridge, "type", "bridge")
        teardown.push(f"delete bridge {self.bridge}", lambda: ip("link", "del", self.bridge, check=False))
        ip("addr", "add", f"{self.root_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for node in self.nodes:
            ip("netns", "add", node.ns)
            teardown.push(f"delete namespace {node.ns}", _deleter(node))
            ip("link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.ns)
            ip("link", "set", node.veth, "master", self.bridge)
            ip("link", "set", node.veth, "up")
            ip("-n", node.ns, "addr", "add", f"{node.ip}/{self.subnet.prefixlen}", "dev", "eth0")
            ip("-n", node.ns, "link", "set", "eth0", "up")
            ip("-n", node.ns, "link", "set", "lo", "up")

    def cut(self, node: Node) -> None:
        ip("link", "set", node.veth, "down")

    def join(self, node: Node) -> None:
        ip("link", "set", node.veth, "up")


def _deleter(node: Node) -> Callable[[], None]:
    def delete() -> None:
        kill_namespace_processes(node.ns)
        ip("netns", "del", node.ns, check=False)  # takes its veth pair along

    return delete
