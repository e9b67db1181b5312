"""A 3-node NATS cluster with JetStream: each node's config, and waiting until it can take writes.

Every node listens on its own address with the usual ports (4222 clients, 6222 routes, 8222
monitoring) and routes to the other two; JetStream keeps its files under the run's directory,
one folder per node, which survive a node's kill so a restarted node catches up from them.

The shop's streams are declared by the services with 3 replicas (``EDGEWAY_BUS_REPLICAS=3``).
The two KV buckets the kit creates on first use (the registry and the config store) would be
created with one replica, on whichever node the creating client happened to talk to, and a kill
of that node would take discovery down with it: :func:`create_buckets` makes them with three
first, as an operator of a real cluster must too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import nats
from nats.js import api

from bench.errors import BenchError

CLIENT_PORT = 4222
ROUTE_PORT = 6222
MONITOR_PORT = 8222
CLUSTER_NAME = "edgeway-rehearsal"


def nats_config(name: str, address: str, peers: Sequence[str], store_dir: Path) -> str:
    """The nats-server config of node ``name`` on ``address``, routing to ``peers``' addresses."""
    if address in peers:
        raise ValueError(f"node {name} lists its own address {address} among its peers")
    routes = "\n".join(f'    "nats-route://{peer}:{ROUTE_PORT}"' for peer in peers)
    return (
        f'server_name: "{name}"\n'
        f'listen: "{address}:{CLIENT_PORT}"\n'
        f'http: "{address}:{MONITOR_PORT}"\n'
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        "  max_memory_store: 256MB\n"
        "  max_file_store: 2GB\n"
        "}\n"
        "cluster {\n"
        f'  name: "{CLUSTER_NAME}"\n'
        f'  listen: "{address}:{ROUTE_PORT}"\n'
        "  routes: [\n"
        f"{routes}\n"
        "  ]\n"
        "}\n"
    )


def cluster_url(addresses: Sequence[str]) -> str:
    """The servers as every edgeway setting takes a cluster: comma-separated URLs."""
    return ",".join(f"nats://{a}:{CLIENT_PORT}" for a in addresses)


async def healthy(address: str) -> bool:
    """The node's own health check, JetStream included (``/healthz``)."""
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            response = await http.get(f"http://{address}:{MONITOR_PORT}/healthz")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def wait_cluster(addresses: Sequence[str], timeout: float = 60.0) -> None:
    """Until every node is healthy and the cluster has a JetStream meta leader that answers."""
    deadline = time.monotonic() + timeout
    while not all([await healthy(a) for a in addresses]):
        if time.monotonic() > deadline:
            raise BenchError(f"the NATS cluster did not get healthy within {timeout:.0f} s")
        await asyncio.sleep(0.25)
    nc = await nats.connect(servers=[f"nats://{a}:{CLIENT_PORT}" for a in addresses], connect_timeout=2)
    try:
        js = nc.jetstream(timeout=2.0)
        while True:
            try:
                await js.account_info()
                return
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise BenchError("the NATS cluster elected no JetStream leader in time") from None
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


async def create_buckets(
    addresses: Sequence[str], buckets: dict[str, float | None], replicas: int = 3
) -> None:
    """KV buckets (name -> TTL in seconds or None) with ``replicas`` copies."""
    nc = await nats.connect(servers=[f"nats://{a}:{CLIENT_PORT}" for a in addresses], connect_timeout=2)
    try:
        js = nc.jetstream(timeout=10.0)
        for bucket, ttl in buckets.items():
            await js.create_key_value(
                api.KeyValueConfig(bucket=bucket, ttl=ttl, history=1 if ttl else 5, replicas=replicas)
            )
    finally:
        await nc.close()
