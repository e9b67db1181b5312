"""The ``jti`` deny-list a verifier consults on every call, and the feed that keeps it current.

Entries carry the token's ``exp``: once that has passed the token fails on expiry anyway, so the
entry is pruned and the list stays as small as the number of revoked, still-live tokens.
:class:`RevocationFeed` polls the security service's ``GET /revocations?since=<cursor>``; with
the default 2 s interval a revoked token stops working at every gateway within ~2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import httpx

log = logging.getLogger("edgeway.security.revocation")


class RevocationList:
    """A set of revoked ``jti`` values, each kept until its token would have expired anyway."""

    __slots__ = ("_clock", "_entries")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, float] = {}
        self._clock = clock

    def add(self, jti: str, exp: float) -> None:
        if exp > self._clock():
            self._entries[jti] = max(exp, self._entries.get(jti, 0.0))

    def __contains__(self, jti: object) -> bool:
        return jti in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def prune(self, leeway: float = 0.0) -> int:
        """Forget entries whose token expired more than ``leeway`` seconds ago; return how many."""
        cutoff = self._clock() - leeway
        stale = [jti for jti, exp in self._entries.items() if exp < cutoff]
        for jti in stale:
            del self._entries[jti]
        return len(stale)


class RevocationFeed:
    """Polls ``GET {base_url}/revocations?since=N`` into a :class:`RevocationList`."""

    def __init__(
        self,
        url: str,
        revocations: RevocationList,
        *,
        interval: float = 2.0,
        prune_leeway: float = 60.0,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.revocations = revocations
        self.interval = interval
        self.prune_leeway = prune_leeway
        self.cursor = 0
        self.last_error: str | None = None
        self._headers = dict(headers or {})
        self._client = client
        self._owns_client = client is None
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> int:
        """Fetch entries newer than the cursor; return how many arrived. Raises on HTTP errors."""
        client = self._http()
        response = await client.get(self.url, params={"since": self.cursor}, headers=self._headers)
        response.raise_for_status()
        body = response.json()
        entries = body.get("entries", [])
        for entry in entries:
            self.revocations.add(str(entry["jti"]), float(entry["exp"]))
        self.cursor = max(self.cursor, int(body.get("cursor", self.cursor)))
        self.revocations.prune(self.prune_leeway)
        return len(entries)

    async def start(self) -> None:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            await self.poll()
        self._task = asyncio.create_task(self._run(), name="edgeway-revocation-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
                self.last_error = None
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                # Keep the list we have: a revoked token must not come back because the service
                # is briefly down.
                if self.last_error is None:
                    log.warning("revocation feed %s failed: %s", self.url, exc)
                self.last_error = str(exc) or type(exc).__name__

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        return self._client
