"""Finding the instances of a service by name.

Sources, each a :class:`Discovery` (``async resolve(service) -> list of base URLs``):

- :class:`StaticDiscovery` — a mapping from settings (``EDGEWAY_SERVICES='{"orders": [...]}'``);
- :class:`EnvDiscovery` — ``EDGEWAY_SERVICE_<NAME>_URLS=http://a:8000,http://b:8000`` (the name
  upper-cased, other characters as ``_``);
- :class:`DnsDiscovery` — DNS SRV ``_http._tcp.<name>`` (host and port per instance, as
  Kubernetes headless services publish them), falling back to A/AAAA records on a default port;
- :class:`RegistryDiscovery` — the NATS KV :class:`~edgeway.service.registry.Registry`.

:class:`ChainDiscovery` asks them in order and returns the first non-empty answer;
:class:`CachedDiscovery` keeps answers for a few seconds so a busy client does not resolve on
every call. An empty answer is not an error here; the client raises
:class:`~edgeway.service.errors.NoInstancesError` naming the sources it tried.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from edgeway.service.errors import DiscoveryError, RegistryError, env_name
from edgeway.service.registry import Registry

__all__ = [
    "CachedDiscovery",
    "ChainDiscovery",
    "Discovery",
    "DnsDiscovery",
    "EnvDiscovery",
    "RegistryDiscovery",
    "StaticDiscovery",
]

_log = logging.getLogger("edgeway.service.discovery")


class Discovery(Protocol):
    name: str

    async def resolve(self, service: str) -> list[str]: ...


class StaticDiscovery:
    name = "static"

    def __init__(self, services: Mapping[str, Sequence[str]]) -> None:
        self._services = {k: [u.rstrip("/") for u in v] for k, v in services.items()}

    async def resolve(self, service: str) -> list[str]:
        return list(self._services.get(service, ()))


class EnvDiscovery:
    name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    async def resolve(self, service: str) -> list[str]:
        env = os.environ if self._environ is None else self._environ
        raw = env.get(f"EDGEWAY_SERVICE_{env_name(service)}_URLS", "")
        return [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]


class DnsDiscovery:
    """SRV first, then A/AAAA. ``domain`` is appended to bare names (``orders`` → ``orders.shop.svc``)."""

    name = "dns"

    def __init__(
        self,
        *,
        scheme: str = "http",
        port: int = 80,
        srv_prefix: str = "_http._tcp.",
        domain: str | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.scheme = scheme
        self.port = port
        self.srv_prefix = srv_prefix
        self.domain = domain
        self._resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout

    def _fqdn(self, service: str) -> str:
        return f"{service}.{self.domain}" if self.domain and "." not in service else service

    async def resolve(self, service: str) -> list[str]:
        host = self._fqdn(service)
        srv = await self._query(self.srv_prefix + host, "SRV")
        if srv:
            # Lowest priority value first, then heavier weight; same for every client so
            # round-robin spreads evenly.
            records = sorted(srv, key=lambda r: (r.priority, -r.weight, str(r.target)))
            return [f"{self.scheme}://{str(r.target).rstrip('.')}:{r.port}" for r in records]
        urls: list[str] = []
        for rdtype in ("A", "AAAA"):
            # Sorted so every client sees the same order (rrsets are unordered).
            for address in sorted(r.address for r in await self._query(host, rdtype)):
                shown = f"[{address}]" if ":" in address else address
                urls.append(f"{self.scheme}://{shown}:{self.port}")
        return urls

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        # Any: dnspython types SRV/A records only as the Rdata base class.
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.Timeout as exc:
            raise DiscoveryError(name, f"DNS lookup of {name} ({rdtype}) timed out") from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryError(name, f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc
        return list(answer)


class RegistryDiscovery:
    name = "registry"

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def resolve(self, service: str) -> list[str]:
        try:
            return [i.url.rstrip("/") for i in await self._registry.lookup(service)]
        except RegistryError as exc:
            raise DiscoveryError(service, str(exc)) from exc


class ChainDiscovery:
    """The first source with an answer wins; a failing source is logged and skipped."""

    def __init__(self, sources: Sequence[Discovery]) -> None:
        self.sources = list(sources)
        self.name = "+".join(s.name for s in self.sources) or "none"

    async def resolve(self, service: str) -> list[str]:
        errors: list[str] = []
        for source in self.sources:
            try:
                urls = await source.resolve(service)
            except DiscoveryError as exc:
                _log.warning("discovery source %s failed for %s: %s", source.name, service, exc)
                errors.append(f"{source.name}: {exc}")
                continue
            if urls:
                return urls
        if errors and len(errors) == len(self.sources):
            raise DiscoveryError(
                service, f"every discovery source failed for {service!r}: {'; '.join(errors)}"
            )
        return []


class CachedDiscovery:
    """Keeps each answer for ``ttl`` seconds; empty answers are not cached."""

    def __init__(
        self, inner: Discovery, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def resolve(self, service: str) -> list[str]:
        hit = self._cache.get(service)
        now = self._clock()
        if hit is not None and now - hit[0] < self.ttl:
            return list(hit[1])
        urls = await self.inner.resolve(service)
        if urls:
            self._cache[service] = (now, urls)
        else:
            self._cache.pop(service, None)
        return list(urls)

    def invalidate(self, service: str | None = None) -> None:
        if service is None:
            self._cache.clear()
        else:
            self._cache.pop(service, None)
