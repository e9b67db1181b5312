"""The ``jti`` deny-list a verifier consults on every call, and the feed that keeps it current.

Entries carry the token's ``exp``: once that has passed the token fails on expiry anyway, so the
entry is pruned and the list stays as small as the number of revoked, still-live tokens.
:class:`RevocationFeed` polls the security service's ``GET /revocations?since=<cursor>``; with
the default 2 s interval a revoked token stops working at every gateway within ~2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import httpx

from edgeway.security.poller import Poller


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


class RevocationFeed(Poller):
    """Polls ``GET {base_url}/revocations?since=N`` into a :class:`RevocationList`.

    A failed poll keeps the list it has: a revoked token must not come back because the service
    is briefly down.
    """

    failures = (httpx.HTTPError, ValueError, KeyError)
    task_name = "edgeway-revocation-feed"

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
        super().__init__(url, interval, client, headers)
        self.revocations = revocations
        self.prune_leeway = prune_leeway
        self.cursor = 0

    async def poll(self) -> int:
        """Fetch entries newer than the cursor; return how many arrived. Raises on HTTP errors."""
        response = await self._http().get(self.url, params={"since": self.cursor}, headers=self._headers)
        response.raise_for_status()
        body = response.json()
        entries = body.get("entries", [])
        for entry in entries:
            self.revocations.add(str(entry["jti"]), float(entry["exp"]))
        self.cursor = max(self.cursor, int(body.get("cursor", self.cursor)))
        self.revocations.prune(self.prune_leeway)
        return len(entries)

    def describe_copy(self) -> str:
        return f"{len(self.revocations)} known revocations"

    async def start(self) -> None:
        await self.poll_safely()
        self.start_polling()
