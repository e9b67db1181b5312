"""Discovery at the gateway: a component that keeps each discovered service's cluster current.

For every service with a ``discovery`` rule it runs one watch (:mod:`edgeway.discovery`) and
applies each instance set it yields, together with the service's static ``instances``, through
:meth:`Cluster.update`: instances that stay keep their pools and connections, new ones join
the balancer, removed ones drain. A watch that fails keeps the last set and retries on its own;
one that crashes outright is restarted after a pause.

At start the component waits (up to :data:`STARTUP_WAIT`) for the first answer of every service
that has no instance yet, so a gateway does not open its port only to answer 503 for a service
it is about to find. NATS connections are shared by the services that use the same URL.

A service that configures ``tls`` reaches every instance over TLS: a discovered ``http://``
URL (DNS and Consul know no scheme; a registry entry may be old) is taken as ``https://`` on the
same host and port, never as a plaintext instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from edgeway.discovery.source import InstanceSource, reraise_cancellation, retry_delay
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.pipeline import GatewayEnv
from edgeway.gateway.upstream.clusters import Cluster
from edgeway.gateway.upstream.config import ConsulRule, DnsRule, NatsKvRule
from edgeway.tasks import cancel_and_wait

if TYPE_CHECKING:
    import httpx
    from nats.aio.client import Client as NatsClient

__all__ = ["STARTUP_WAIT", "ServiceDiscovery", "use_discovery"]

_log = logging.getLogger("edgeway.gateway.upstream.discovery")

STARTUP_WAIT = 5.0  # seconds the gateway waits at start for a service's first instances
_RESTART_CAP = 30.0


def use_discovery(env: GatewayEnv) -> None:
    """Register the discovery component when any service of the config has a discovery rule."""
    if any(svc.discovery is not None for svc in env.config.services.values()):
        env.shared("discovery", lambda: ServiceDiscovery(env.config, env.clusters))


class ServiceDiscovery:
    """The ``discovery`` component (see the module docstring)."""

    def __init__(self, config: GatewayConfig, clusters: dict[str, Cluster]) -> None:
        self._watched: list[tuple[str, Cluster, list[str], Callable[[], Awaitable[InstanceSource]]]] = []
        self._tls: set[str] = set()  # services whose instances are all reached over TLS
        for name, svc in config.services.items():
            if svc.discovery is not None:
                rule = svc.discovery.source
                self._watched.append((name, clusters[name], list(svc.instances), self._factory(rule)))
                if svc.tls is not None:
                    self._tls.add(name)
        self._tasks: list[asyncio.Task[None]] = []
        self._answered: dict[str, asyncio.Event] = {}
        self._nats: dict[str, asyncio.Task[NatsClient]] = {}
        self._http: httpx.AsyncClient | None = None

    def _factory(self, rule: DnsRule | NatsKvRule | ConsulRule) -> Callable[[], Awaitable[InstanceSource]]:
        if isinstance(rule, DnsRule):
            dns_rule = rule

            async def dns() -> InstanceSource:
                from edgeway.discovery.dns import DnsSource, make_resolver

                return DnsSource(
                    dns_rule.name,
                    type=dns_rule.type,
                    port=dns_rule.port,
                    resolver=make_resolver(dns_rule.nameservers, float(dns_rule.timeout)),
                    min_ttl=float(dns_rule.min_ttl),
                    max_ttl=float(dns_rule.max_ttl),
                )

            return dns
        if isinstance(rule, NatsKvRule):
            kv_rule = rule

            async def nats_kv() -> InstanceSource:
                from edgeway.discovery.registry import Registry, RegistrySource

                nc = await self._nats_client(kv_rule.url)
                return RegistrySource(Registry(nc, bucket=kv_rule.bucket), kv_rule.service, meta=kv_rule.meta)

            return nats_kv
        consul_rule = rule

        async def consul() -> InstanceSource:
            import httpx

            from edgeway.discovery.consul import ConsulSource

            if self._http is None:
                self._http = httpx.AsyncClient()  # each source sets its own timeouts per request
            return ConsulSource(
                consul_rule.url,
                consul_rule.service,
                tag=consul_rule.tag,
                datacenter=consul_rule.datacenter,
                token=consul_rule.token,
                wait=float(consul_rule.wait),
                client=self._http,
            )

        return consul

    async def _nats_client(self, url: str) -> NatsClient:
        """The shared connection to ``url``; connecting is retried until it succeeds."""
        task = self._nats.get(url)
        if task is None or task.cancelled():
            task = self._nats[url] = asyncio.create_task(_connect(url), name=f"discovery-nats-{url}")
        return await asyncio.shield(task)

    async def start(self) -> None:
        waiting: list[asyncio.Event] = []
        for name, cluster, static, factory in self._watched:
            answered = self._answered[name] = asyncio.Event()
            if not cluster.endpoints:
                waiting.append(answered)
            self._tasks.append(
                asyncio.create_task(self._follow(name, cluster, static, factory), name=f"discovery-{name}")
            )
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STARTUP_WAIT):
                    await asyncio.gather(*(event.wait() for event in waiting))
            for name, cluster, *_ in self._watched:
                if not cluster.endpoints:
                    _log.warning(
                        "no instance of service %s found yet; it answers 503 until one is",
                        name,
                        extra={"service_name": name},
                    )

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        for connecting in self._nats.values():
            if connecting.done() and not connecting.cancelled():
                from nats.errors import Error as NatsError

                with contextlib.suppress(NatsError, OSError, TimeoutError):
                    await connecting.result().close()
            else:
                await cancel_and_wait(connecting)
        self._nats.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _follow(
        self,
        name: str,
        cluster: Cluster,
        static: list[str],
        factory: Callable[[], Awaitable[InstanceSource]],
    ) -> None:
        crashes = 0
        while True:
            try:
                source = await factory()
                async for found in source.watch():
                    crashes = 0
                    urls = [as_https(url) for url in found] if name in self._tls else found
                    change = cluster.update([*static, *urls])
                    if change:
                        _log.info(
                            "service %s: %d instance(s) joined, %d left; %d now",
                            name,
                            len(change.added),
                            len(change.removed),
                            len(cluster.endpoints),
                            extra={
                                "service_name": name,
                                "source": source.description,
                                "joined": [ep.label for ep in change.added],
                                "left": [ep.label for ep in change.removed],
                            },
                        )
                    self._answered[name].set()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or an unexpected library error must not end discovery for good.
                crashes += 1
                delay = retry_delay(crashes, 1.0, _RESTART_CAP)
                _log.exception("discovery of service %s crashed; restarting in %.1fs", name, delay)
                await asyncio.sleep(delay)


def as_https(url: str) -> str:
    """``url`` with the https scheme (discovered instances of a service that sets ``tls``)."""
    return "https://" + url.removeprefix("http://") if url.startswith("http://") else url


async def _connect(url: str) -> NatsClient:
    from nats.errors import Error as NatsError

    from edgeway.discovery import natsconn

    failures = 0
    while True:
        try:
            return await natsconn.connect(url, name="edgeway-gateway-discovery")
        except (OSError, NatsError, TimeoutError) as exc:
            reraise_cancellation()
            failures += 1
            delay = retry_delay(failures, 0.5, _RESTART_CAP)
            _log.warning("cannot connect to NATS at %s (%s); retrying in %.1fs", url, exc, delay)
            await asyncio.sleep(delay)
