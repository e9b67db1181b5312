"""One-shot lookups by service name (:class:`~edgeway.discovery.source.Discovery`): a static map,
a chain of sources, and a cache in front of any of them.

:class:`ChainDiscovery` asks its sources in order and returns the first non-empty answer;
:class:`CachedDiscovery` keeps answers for a few seconds so a busy client does not resolve on
every call. "The lookup failed" and "there is no instance" are kept apart: a source that fails
raises :class:`~edgeway.discovery.errors.DiscoveryError`, and a chain with no answer raises it
when a source failed (the failed one may have known instances), so the cache can go on serving
the last answer it had (stale-while-error, up to ``max_stale`` seconds) through a registry
hiccup instead of turning it into "no instance". The DNS and registry lookups live with their
sources (:mod:`.dns`, :mod:`.registry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from edgeway.discovery.errors import DiscoveryError
from edgeway.discovery.source import Discovery
from edgeway.observability.logs import FailureLog

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
        # One warning per source and service per outage, not one per call.
        self._outages: dict[tuple[int, str], FailureLog] = {}

    async def resolve(self, service: str) -> list[str]:
        errors: list[str] = []
        for index, source in enumerate(self.sources):
            try:
                urls = await source.resolve(service)
            except DiscoveryError as exc:
                outage = self._outages.get((index, service))
                if outage is None:
                    what = f"discovery source {source.name} for {service}"
                    outage = self._outages[(index, service)] = FailureLog(_log, what)
                outage.failed("discovery source %s failed for %s: %s", source.name, service, exc)
                errors.append(f"{source.name}: {exc}")
                continue
            recovered = self._outages.pop((index, service), None)
            if recovered is not None:
                recovered.succeeded()
            if urls:
                return urls
        if errors:
            # No source answered, and at least one could not be asked: that is not "none".
            every = "every discovery source" if len(errors) == len(self.sources) else "discovery"
            raise DiscoveryError(service, f"{every} failed for {service!r}: {'; '.join(errors)}")
        return []


class CachedDiscovery:
    """Keeps each answer for ``ttl`` seconds; empty answers are not cached.

    When a refresh fails (:class:`DiscoveryError`: the registry timed out while its stream
    changed leader, DNS did not answer), the last answer goes on being served for up to
    ``max_stale`` seconds past its ``ttl``, the source asked again once per ``ttl`` meanwhile
    (not on every call, which would make each one wait for the failing lookup), and the outage
    is logged once per service. An empty answer from the source ("there are none") replaces it
    at once. ``max_stale=0`` turns this off.
    """

    def __init__(
        self,
        inner: Discovery,
        *,
        ttl: float = 5.0,
        max_stale: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_stale < 0:
            raise ValueError(f"max_stale must be >= 0 seconds, got {max_stale}")
        self.inner = inner
        self.name = inner.name
        self.ttl = ttl
        self.max_stale = max_stale
        self._clock = clock
        # service -> (when the answer was fetched, until when it is served without asking, URLs)
        self._cache: dict[str, tuple[float, float, list[str]]] = {}
        self._outages: dict[str, FailureLog] = {}

    async def resolve(self, service: str) -> list[str]:
        hit = self._cache.get(service)
        now = self._clock()
        if hit is not None and now < hit[1]:
            return list(hit[2])
        try:
            urls = await self.inner.resolve(service)
        except DiscoveryError as exc:
            now = self._clock()
            if hit is None or now - hit[0] >= self.ttl + self.max_stale:
                self._cache.pop(service, None)
                raise
            fetched, _, known = hit
            self._cache[service] = (fetched, now + self.ttl, known)
            self._outage(service).failed(
                "discovery of %s failed, serving the %d instance(s) known %.1f s ago (for up to "
                "%.0f s more): %s",
                service,
                len(known),
                now - fetched,
                fetched + self.ttl + self.max_stale - now,
                exc,
            )
            return list(known)
        outage = self._outages.pop(service, None)
        if outage is not None:
            outage.succeeded()
        if urls:
            self._cache[service] = (now, now + self.ttl, urls)
        else:
            self._cache.pop(service, None)
        return list(urls)

    def _outage(self, service: str) -> FailureLog:
        found = self._outages.get(service)
        if found is None:
            found = self._outages[service] = FailureLog(_log, f"discovery of {service}")
        return found

    def invalidate(self, service: str | None = None) -> None:
        if service is None:
            self._cache.clear()
        else:
            self._cache.pop(service, None)
