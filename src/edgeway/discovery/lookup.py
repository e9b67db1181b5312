"""One-shot lookups by service name (:class:`~edgeway.discovery.source.Discovery`): a static map,
a chain of sources, and a cache in front of any of them.

:class:`ChainDiscovery` asks its sources in order and returns the first non-empty answer;
:class:`CachedDiscovery` keeps answers for a few seconds so a busy client does not resolve on
every call. The DNS and registry lookups live with their sources (:mod:`.dns`, :mod:`.registry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from edgeway.discovery.errors import DiscoveryError
from edgeway.discovery.source import Discovery

__all__ = ["CachedDiscovery", "ChainDiscovery", "StaticDiscovery"]

_log = logging.getLogger("edgeway.discovery")


class StaticDiscovery:
    name = "static"

    def __init__(self, services: Mapping[str, Sequence[str]]) -> None:
        self._services = {k: [u.rstrip("/") for u in v] for k, v in services.items()}

    async def resolve(self, service: str) -> list[str]:
        return list(self._services.get(service, ()))


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
