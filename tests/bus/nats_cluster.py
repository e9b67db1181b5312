"""A 3-node nats-server cluster with JetStream on loopback, for tests of failover.

Every port is chosen by the servers (``-1``) and read back from their ports files: the first
node is the seed, the others route to its cluster port, and gossip joins them all. A node can
be killed (SIGKILL), frozen (SIGSTOP: its connections stay open and go silent, as a node cut off
the network looks to its clients) and thawed.

nats-server refuses to run a JetStream cluster without a configured route, and the seed cannot
know the others' ports before they start: it gets a route to ``dead_port`` (a port nothing
listens on, :func:`conftest.dead_port`), which it keeps retrying harmlessly; the others find it
and gossip tells it about them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from edgeway.bus.embedded import find_nats_server


class Node:
    def __init__(self, name: str, store: Path, routes: list[str]) -> None:
        self.name = name
        self.store = store
        self.routes = routes
        self.client_port = 0
        self.cluster_port = 0
        self.monitor_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 15.0) -> None:
        ports_dir = Path(tempfile.mkdtemp(prefix="edgeway-nats-ports-"))
        command = [
            find_nats_server(),
            "-n",
            self.name,
            "-js",
            "-sd",
            str(self.store),
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "--cluster_name",
            "edgeway-test",
            "--cluster",
            "nats://127.0.0.1:-1",
            "-m",
            "-1",
            "--ports_file_dir",
            str(ports_dir),
        ]
        if self.routes:
            command += ["--routes", ",".join(self.routes)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nats-server {self.name} exited at start-up")
                for path in ports_dir.glob("*.ports"):
                    with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
                        ports = json.loads(path.read_text())
                        self.client_port = int(ports["nats"][0].rsplit(":", 1)[1])
                        self.cluster_port = int(ports["cluster"][0].rsplit(":", 1)[1])
                        self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
                        return
                time.sleep(0.02)
            raise RuntimeError(f"nats-server {self.name} wrote no ports file within {timeout} s")
        finally:
            shutil.rmtree(ports_dir, ignore_errors=True)

    def meta_leader(self) -> str:
        """The JetStream meta leader as this node sees it ("" while there is none)."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        with urllib.request.urlopen(url, timeout=2) as response:
            info = json.loads(response.read())
        return str((info.get("meta_cluster") or {}).get("leader") or "")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class NatsCluster:
    """Three nodes ``n1`` (the seed), ``n2``, ``n3``. Use as a context manager."""

    def __init__(self, dead_port: int, size: int = 3) -> None:
        self.dead_port = dead_port
        self.size = size
        self.dir = Path(tempfile.mkdtemp(prefix="edgeway-nats-cluster-"))
        self.nodes: list[Node] = []

    def start(self) -> None:
        seed = Node("n1", self.dir / "n1", [f"nats-route://127.0.0.1:{self.dead_port}"])
        seed.start()
        self.nodes.append(seed)
        for i in range(2, self.size + 1):
            node = Node(f"n{i}", self.dir / f"n{i}", [f"nats-route://127.0.0.1:{seed.cluster_port}"])
            node.start()
            self.nodes.append(node)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
