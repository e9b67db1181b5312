"""The ``jti`` deny-list a verifier consults on every call, and the two sources that keep it current.

Entries carry the token's ``exp``: once that has passed the token fails on expiry anyway, so the
entry is pruned and the list stays as small as the number of revoked, still-live tokens.

* :class:`RevocationSubscriber` (push): the security service publishes a :class:`TokenRevokedEvent`
  event through its transactional outbox when it revokes a token or a refresh-token family;
  every gateway instance receives it on a broadcast subscription and the token stops working
  there within milliseconds.
* :class:`RevocationFeed` (pull): polls ``GET /revocations?since=<cursor>``. On its own, with the
  default 2 s interval, a revoked token stops working within ~2 s; next to the subscriber it is
  the catch-up — at start, and for anything published while the gateway was disconnected from
  the broker (broadcast members get nothing kept for them) — so a longer interval will do.

Both count what they bring in (``received``) and, when ``on_received`` is set, report each arrival
(how many entries) to it: the gateway turns that into its revocation metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import httpx

from edgeway.bus.bus import EventBus
from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import Event
from edgeway.bus.transport import ChannelConfig
from edgeway.security.poller import Poller

# Services and gateways must declare the channel alike (the stream is created by whoever comes
# first). An hour bounds what the broker keeps; no subscriber reads history.
REVOCATIONS = ChannelConfig("revocations", ttl=3600.0)


class TokenRevokedEvent(Event):
    """A token (``jti``) is revoked until ``exp``, when it would have expired anyway.

    (``Event`` in the name: :class:`edgeway.security.errors.TokenRevoked` is the verifier's error.)
    """

    channel = REVOCATIONS.name
    event_type = "security.token-revoked.v1"

    jti: str
    exp: float
    reason: str = ""


class RevocationList:
    """A set of revoked ``jti`` values, each kept until its token would have expired anyway."""

    __slots__ = ("_clock", "_entries", "_watchers")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, float] = {}
        self._clock = clock
        self._watchers: list[Callable[[str], None]] = []

    def add(self, jti: str, exp: float) -> None:
        if exp > self._clock():
            known = jti in self._entries
            self._entries[jti] = max(exp, self._entries.get(jti, 0.0))
            if not known:
                for watcher in self._watchers:
                    watcher(jti)

    def watch(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(jti)`` for each token revoked from now on: what a token verified once
        keeps open (a push session) ends with it, not at its ``exp``."""
        self._watchers.append(watcher)

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
        self.received = 0
        self.on_received: Callable[[int], None] | None = None

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
        if entries:
            self.received += len(entries)
            if self.on_received is not None:
                self.on_received(len(entries))
        return len(entries)

    def describe_copy(self) -> str:
        return f"{len(self.revocations)} known revocations"

    async def start(self) -> None:
        await self.poll_safely()
        self.start_polling()


class RevocationSubscriber:
    """Adds every :class:`TokenRevokedEvent` event to a :class:`RevocationList`, on every instance.

    Register it on the gateway's (or service's) bus before the bus starts::

        bus = EventBus(NatsTransport(url))
        RevocationSubscriber(bus, verifier.revocations)
        feed = RevocationFeed(f"{security}/revocations", verifier.revocations, interval=30)
        async with bus:
            await feed.start()

    ``group`` names the subscription; every member gets every event (a broadcast group).
    """

    def __init__(
        self,
        bus: EventBus,
        revocations: RevocationList,
        *,
        group: str = "revocations",
        channel: ChannelConfig = REVOCATIONS,
    ) -> None:
        if channel.name != TokenRevokedEvent.channel:
            raise BusConfigError(
                f"TokenRevokedEvent travels on channel {TokenRevokedEvent.channel!r}; "
                f"configure that one, not {channel.name!r}"
            )
        self.revocations = revocations
        self.received = 0
        self.on_received: Callable[[int], None] | None = None
        bus.configure(channel)
        bus.add_handler(TokenRevokedEvent, self._apply, group=group, batch=True, broadcast=True)

    async def _apply(self, events: list[TokenRevokedEvent]) -> None:
        for event in events:
            self.revocations.add(event.jti, event.exp)
        self.received += len(events)
        if self.on_received is not None:
            self.on_received(len(events))
