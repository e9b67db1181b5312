"""Clusters: the running form of a configured service — its instances, their connection pools,
the balancer and the timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgeway.http.limits import PoolLimits, UpstreamTimeouts
from edgeway.http.pool import ConnectionPool
from edgeway.resilience.balancer import LeastOutstanding, RoundRobin, make_balancer


@dataclass(eq=False, slots=True)
class Endpoint:
    """One instance of a service (Envoy's word)."""

    host: str
    port: int
    pool: ConnectionPool
    authority: bytes  # Host header value sent upstream
    outstanding: int = 0
    available: bool = True

    @property
    def label(self) -> str:
        return self.pool.instance


@dataclass(eq=False, slots=True)
class Cluster:
    name: str
    endpoints: list[Endpoint]
    balancer: RoundRobin[Endpoint] | LeastOutstanding[Endpoint]
    timeouts: UpstreamTimeouts
    pool_limits: PoolLimits
    name_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode()

    def pick(self) -> Endpoint:
        return self.balancer.pick(self.endpoints)

    def close(self) -> None:
        for ep in self.endpoints:
            ep.pool.close()


def make_endpoint(url: str, limits: PoolLimits) -> Endpoint:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    authority = f"{host}:{port}" if port != 80 else host
    return Endpoint(host, port, ConnectionPool(host, port, limits), authority.encode())


def make_cluster(
    name: str, urls: list[str], balancer: str, timeouts: UpstreamTimeouts, limits: PoolLimits
) -> Cluster:
    return Cluster(name, [make_endpoint(u, limits) for u in urls], make_balancer(balancer), timeouts, limits)
