"""Clusters: the running form of a configured service — its instances, their connection pools,
the balancer and the timeouts.

A cluster's endpoints change while it serves when discovery finds new instances
(:meth:`Cluster.update`): the endpoint list is replaced in one assignment, so a request picks
from the old list or the new one, never a torn one. An endpoint that leaves is *drained*: out of
the balancer at once, its pool closed only when its last request in flight has ended (closing
earlier would also stop the pool's deadline ticker, leaving those requests without timeouts).

An ``https://`` instance's pool connects with TLS: the service's own context (``tls`` in its
config: CA bundle, client certificate) or the default one (system CAs), and the service's
``server_name`` or the instance's host as SNI and the name verified.
A service with ``protocol: h2`` reaches each instance over HTTP/2 (:class:`H2Pool`: one
connection multiplexing every request, h2c to ``http://`` instances, TLS with ALPN ``h2`` to
``https://`` ones); its endpoints carry that pool in ``h2``.
Instances may have static weights (``services.<name>.weights``, by address; discovered instances
not named there weigh 1); a service with weights gets a weighted balancer. A sticky route picks
the instance by consistent hashing on the request's key through :meth:`Cluster.keyed`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgeway.http.h2_pool import H2Pool
from edgeway.http.limits import PoolLimits, UpstreamTimeouts
from edgeway.http.pool import ConnectionPool
from edgeway.http.upstream_tls import default_client_context
from edgeway.resilience.balancer import Balancer, Rendezvous, make_balancer
from edgeway.resilience.hashing import stable_hash

DRAIN_POLL = 0.1  # seconds between checks of a draining endpoint's requests in flight


@dataclass(eq=False, slots=True)
class Endpoint:
    """One instance of a service (Envoy's word)."""

    host: str
    port: int
    pool: ConnectionPool
    authority: bytes  # Host header value sent upstream
    outstanding: int = 0
    available: bool = True
    weight: int = 1  # static share of the service's traffic (services.<name>.weights)
    current_weight: int = 0  # the weighted round robin's running counter
    hash_id: int = 0  # stable identity for consistent hashing: a hash of host:port
    h2: H2Pool | None = None  # the HTTP/2 connections of a `protocol: h2` service's instance

    @property
    def label(self) -> str:
        return self.pool.instance

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The context its connections handshake with; None: plaintext."""
        return self.pool.tls

    @property
    def server_hostname(self) -> str:
        return self.pool.server_hostname

    @property
    def key(self) -> tuple[str, int, bool]:
        """What identifies the instance in a cluster: its address and whether it speaks TLS."""
        return self.host, self.port, self.pool.tls is not None


@dataclass(frozen=True, slots=True)
class ClusterChange:
    """What one :meth:`Cluster.update` did."""

    added: tuple[Endpoint, ...]
    removed: tuple[Endpoint, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


ChangeListener = Callable[["Cluster", ClusterChange], None]


@dataclass(eq=False, slots=True)
class Cluster:
    name: str
    endpoints: list[Endpoint]
    balancer: Balancer[Endpoint]
    timeouts: UpstreamTimeouts
    pool_limits: PoolLimits
    # The context of its https:// instances (None: the default one) and the name they are
    # asked for and verified against (None: each instance's host).
    tls_context: ssl.SSLContext | None = None
    server_name: str | None = None
    # Static instance weights by address; an instance not named weighs 1.
    weights: dict[tuple[str, int], int] = field(default_factory=dict)
    name_bytes: bytes = field(init=False)
    # Told after every change of endpoints (health checks start and stop checking instances).
    # Clusters outlive a gateway across live reloads: a component that adds a listener removes
    # it when it stops.
    listeners: list[ChangeListener] = field(default_factory=list)
    http2: bool = False  # its instances are reached over HTTP/2 (each endpoint's ``h2`` pool)
    draining: list[Endpoint] = field(default_factory=list)  # removed, requests still in flight
    # Instances an operator drained (admin API), by key, with their URL: kept out of the cluster
    # whatever discovery finds, until undrained.
    drained: dict[tuple[str, int, bool], str] = field(default_factory=dict)
    _reaper: asyncio.TimerHandle | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode()

    def pick(self) -> Endpoint:
        return self.balancer.pick(self.endpoints)

    def keyed(self, key: int) -> Cluster:
        """A view of this cluster for one request of a sticky route: the same endpoints, pools
        and timeouts, the instance chosen by consistent hashing on ``key`` (the request's key
        hash) instead of the service's balancer. Never closed: it owns nothing."""
        return Cluster(
            self.name,
            self.endpoints,
            Rendezvous(key),
            self.timeouts,
            self.pool_limits,
            tls_context=self.tls_context,
            server_name=self.server_name,
            weights=self.weights,
            http2=self.http2,
        )

    def update(self, urls: Sequence[str]) -> ClusterChange:
        """Make the cluster's instances exactly ``urls``.

        Instances that stay keep their endpoint: pool, open connections, counters. New ones get
        a fresh endpoint and pool. Removed ones leave the balancer at once and are drained: the
        requests in flight there finish (with their timeouts), then the pool closes.
        """
        current = {ep.key: ep for ep in self.endpoints}
        wanted: dict[tuple[str, int, bool], str] = {}
        for url in urls:
            key = _key(url)
            if key not in self.drained:
                wanted.setdefault(key, url)
        if wanted.keys() == current.keys():
            return ClusterChange((), ())
        endpoints: list[Endpoint] = []
        added: list[Endpoint] = []
        for key, url in wanted.items():
            ep = current.get(key)
            if ep is None:
                ep = make_endpoint(
                    url,
                    self.pool_limits,
                    self.tls_context,
                    self.server_name,
                    self.weights.get(key[:2], 1),
                    http2=self.http2,
                )
                added.append(ep)
            endpoints.append(ep)
        removed = [ep for key, ep in current.items() if key not in wanted]
        self.endpoints = endpoints
        for ep in removed:
            ep.available = False
            if ep.h2 is not None:
                ep.h2.removed()  # its HTTP/2 connections are PINGed: a dead one fails its streams
        self._drain(removed)
        change = ClusterChange(tuple(added), tuple(removed))
        for listener in self.listeners:
            listener(self, change)
        return change

    def find(self, instance: str) -> Endpoint | None:
        """The endpoint ``instance`` names (``host:port`` or its URL), serving or drained."""
        for ep in self.endpoints:
            if instance in (ep.label, endpoint_url(ep)):
                return ep
        return None

    def drain(self, instance: str) -> Endpoint:
        """Take ``instance`` (``host:port`` or its URL) out of balancing: no new request goes to
        it, those in flight finish, then its pool closes. It stays out (discovery finding it
        again included) until :meth:`undrain`. KeyError naming the instances when none matches."""
        ep = self.find(instance)
        if ep is None:
            known = ", ".join(ep.label for ep in self.endpoints) or "none"
            raise KeyError(f"service {self.name!r} has no instance {instance!r} (its instances: {known})")
        self.drained[ep.key] = endpoint_url(ep)
        self.update([endpoint_url(e) for e in self.endpoints])
        return ep

    def undrain(self, instance: str) -> str:
        """Put a drained instance back into balancing (a fresh pool); its URL. KeyError when
        ``instance`` is not drained."""
        for key, url in self.drained.items():
            if instance in (url, f"{key[0]}:{key[1]}"):
                del self.drained[key]
                self.update([*(endpoint_url(e) for e in self.endpoints), url])
                return url
        known = ", ".join(self.drained.values()) or "none"
        raise KeyError(f"service {self.name!r} has no drained instance {instance!r} (drained: {known})")

    def use_tls(self, context: ssl.SSLContext | None) -> None:
        """New connections to its https:// instances handshake with ``context`` (certificates
        reloaded); open ones keep the context they were made with."""
        self.tls_context = context
        alpn = ("h2",) if self.http2 else ("http/1.1",)
        for ep in (*self.endpoints, *self.draining):
            if ep.pool.tls is not None:
                ep.pool.tls = context if context is not None else default_client_context(alpn)
                if ep.h2 is not None:
                    ep.h2.tls = ep.pool.tls

    def close(self) -> None:
        """Close every pool, each once its requests in flight have ended."""
        self._drain(self.endpoints)

    def _drain(self, endpoints: Sequence[Endpoint]) -> None:
        self.draining.extend(ep for ep in endpoints if ep not in self.draining)
        if self._reaper is not None:
            self._reaper.cancel()
        self._reap()

    def _reap(self) -> None:
        self._reaper = None
        busy: list[Endpoint] = []
        for ep in self.draining:
            if ep.outstanding:
                busy.append(ep)
            else:
                _close(ep)
        self.draining = busy
        if busy:
            try:
                self._reaper = asyncio.get_running_loop().call_later(DRAIN_POLL, self._reap)
            except RuntimeError:  # no loop any more (interpreter shutdown): close as they are
                for ep in busy:
                    _close(ep)
                self.draining = []


def endpoint_url(ep: Endpoint) -> str:
    """The URL of an endpoint's instance (as ``instances`` lists it)."""
    host = f"[{ep.host}]" if ":" in ep.host else ep.host
    return f"{'https' if ep.pool.tls is not None else 'http'}://{host}:{ep.port}"


def _close(ep: Endpoint) -> None:
    ep.pool.close()
    if ep.h2 is not None:
        ep.h2.close()


def _key(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    return parts.hostname or "127.0.0.1", parts.port or (443 if https else 80), https


def _address(url: str) -> tuple[str, int]:
    host, port, _ = _key(url)
    return host, port


def make_endpoint(
    url: str,
    limits: PoolLimits,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    weight: int = 1,
    *,
    http2: bool = False,
) -> Endpoint:
    """The endpoint of the instance at ``url``; an ``https://`` one connects with ``tls`` (None:
    the default context) and asks for ``server_name`` (None: its host). ``weight``: its static
    weight for a weighted balancer. ``http2``: reached over HTTP/2 (its ``h2`` pool; ``tls``
    then offers ALPN ``h2``)."""
    host, port, https = _key(url)
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in Host
    authority = f"{shown}:{port}" if port != (443 if https else 80) else shown
    context: ssl.SSLContext | None = None
    if https:
        context = tls if tls is not None else default_client_context(("h2",) if http2 else ("http/1.1",))
        pool = ConnectionPool(host, port, limits, context, server_name or host)
    else:
        pool = ConnectionPool(host, port, limits)
    return Endpoint(
        host,
        port,
        pool,
        authority.encode(),
        weight=weight,
        hash_id=stable_hash(f"{shown}:{port}".encode()),
        h2=H2Pool(host, port, context, server_name or host, limits.h2_ping_interval, limits.h2_ping_timeout)
        if http2
        else None,
    )


def make_cluster(
    name: str,
    urls: list[str],
    balancer: str,
    timeouts: UpstreamTimeouts,
    limits: PoolLimits,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    weights: dict[str, int] | None = None,
    *,
    http2: bool = False,
) -> Cluster:
    """A cluster of ``urls``; ``tls``/``server_name`` for its https:// instances; ``weights``:
    static weights by instance URL (others weigh 1); ``http2``: reached over HTTP/2."""
    by_address = {_address(url): weight for url, weight in (weights or {}).items()}
    endpoints = [
        make_endpoint(u, limits, tls, server_name, by_address.get(_address(u), 1), http2=http2) for u in urls
    ]
    weighted = any(weight != 1 for weight in by_address.values())
    return Cluster(
        name,
        endpoints,
        make_balancer(balancer, weighted),
        timeouts,
        limits,
        tls,
        server_name,
        by_address,
        http2=http2,
    )
