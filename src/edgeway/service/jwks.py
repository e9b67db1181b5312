"""A cached JSON Web Key Set, fetched over HTTP from the security service.

The set is fetched on first use and again when it is older than ``ttl``. A token signed with a
key id the cache does not know triggers a refetch (the issuer may have rotated keys), but at
most once per ``min_refresh_interval``, so a stream of tokens with made-up key ids cannot turn
the service into a load generator against the security service. When a refetch fails, the keys
already held keep working (logged as a warning); with no keys at all the error is
:class:`~edgeway.service.errors.JwksUnavailableError` (503: not the caller's fault).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import jwt
from jwt import PyJWK

from edgeway.service.errors import AuthenticationError, JwksUnavailableError

__all__ = ["JwksCache"]

_log = logging.getLogger("edgeway.service.jwks")


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self._timeout = timeout
        self._http = http
        self._owns_http = http is None
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    async def key(self, kid: str) -> PyJWK:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.ttl
        unknown = kid not in self._keys
        may_refetch = self._attempted_at is None or now - self._attempted_at >= self.min_refresh_interval
        if stale or (unknown and may_refetch):
            await self.refresh(force=unknown)
        found = self._keys.get(kid)
        if found is None:
            raise AuthenticationError(f"token signed with unknown key id {kid!r}")
        return found

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            now = self._clock()
            # Another task may have refreshed while this one waited for the lock.
            if self._attempted_at is not None and now - self._attempted_at < self.min_refresh_interval:
                fresh = self._fetched_at is not None and now - self._fetched_at < self.ttl
                if fresh or force:
                    return
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except JwksUnavailableError:
                if not self._keys:
                    raise
                _log.warning(
                    "JWKS refresh from %s failed; keeping %d cached key(s)", self.url, len(self._keys)
                )
                return
            self._keys = keys
            self._fetched_at = now

    async def _fetch(self) -> dict[str, PyJWK]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await self._http.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise JwksUnavailableError(f"cannot fetch the JWKS from {self.url}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksUnavailableError(f"{self.url} did not return a JWKS (a JSON object with 'keys')")
        keys: dict[str, PyJWK] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry["kid"]] = PyJWK(entry)
            except jwt.PyJWTError as exc:
                # One key of an unsupported type must not hide the others.
                _log.warning("skipping JWKS key %s from %s: %s", entry["kid"], self.url, exc)
        return keys

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None
