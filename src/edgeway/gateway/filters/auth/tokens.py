"""Token verification at the gateway: one shared component per gateway.

:class:`EdgeAuth` owns the long-lived pieces of :mod:`edgeway.security` — the JWKS client
(fetched at start, refreshed on an unknown ``kid``, stale during an outage), the revocation feed
and, when configured, the revocation push over the event bus
(:mod:`edgeway.gateway.filters.auth.revocation_push`),
the policy replica — and the :class:`~edgeway.security.verify.TokenVerifier` with its verified
token cache. On top of that cache it keeps, per token, what the routes need from a verified token
(the :class:`~edgeway.gateway.core.pipeline.Identity`, the encoded identity headers, the policy
subject attributes), so a repeated token costs one verifier cache hit and a dict lookup.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeway.gateway.core.pipeline import Identity
from edgeway.gateway.filters.auth.config import GatewayAuth
from edgeway.gateway.filters.auth.identity_headers import IdentityEncoder
from edgeway.gateway.filters.auth.metrics import AuthMetrics
from edgeway.http.exchange import Headers
from edgeway.security.errors import TokenUnknownKey
from edgeway.security.policy import PolicyReplica
from edgeway.security.revocation import RevocationFeed, RevocationList
from edgeway.security.verify import Claims, JwksClient, TokenVerifier

if TYPE_CHECKING:
    from edgeway.gateway.filters.auth.revocation_push import RevocationPush
    from edgeway.observability.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token as the routes use it."""

    claims: Claims
    identity: Identity
    headers: Headers  # the identity headers sent upstream
    attributes: Mapping[str, Any]  # the subject of policy decisions: every claim, roles, scopes


class EdgeAuth:
    """The gateway's token verification component (``env.shared("auth", ...)``)."""

    def __init__(self, config: GatewayAuth, metrics: Metrics) -> None:
        self.config = config
        counters = AuthMetrics(metrics)
        self.jwks = JwksClient(
            config.jwks_url,
            refresh_interval=float(config.jwks_refresh_interval),
            min_refresh_interval=float(config.jwks_min_refresh_interval),
        )
        self.jwks.on_poll = counters.jwks_fetched
        self.revocations = RevocationList()
        counters.watch_known(self.revocations.__len__)
        self.feed: RevocationFeed | None = None
        self.push: RevocationPush | None = None
        rules = config.revocations
        if rules is not None:
            self.feed = RevocationFeed(rules.url, self.revocations, interval=rules.poll_interval)
            self.feed.on_poll = counters.revocations_polled
            self.feed.on_received = counters.received_by("poll")
            if rules.bus is not None:
                # Imported only when used: the bus and a broker client add ~0.1 s of imports at start.
                from edgeway.gateway.filters.auth.revocation_push import RevocationPush

                push = self.push = RevocationPush(rules.bus, self.feed, poll_interval=rules.poll_interval)
                push.subscriber.on_received = counters.received_by("push")
                counters.watch_push(lambda: push.state.is_up)
        self.policies = (
            PolicyReplica(config.policy_url, interval=float(config.policy_interval))
            if config.policy_url
            else None
        )
        self.verifier = TokenVerifier(
            self.jwks,
            issuer=config.issuers,
            audience=config.audiences,
            leeway=float(config.leeway),
            algorithms=config.algorithms,
            revocations=self.revocations,
            cache_size=config.cache_size,
            cache_ttl=None if config.cache_ttl is None else float(config.cache_ttl),
            require_jti=config.require_jti,
            token_types=config.token_types,
        )
        self._encoder = IdentityEncoder(config)
        self._cache_size = max(config.cache_size, 1)
        self._verified: OrderedDict[str | bytes, Verified] = OrderedDict()

    async def start(self) -> None:
        """Fetch the keys (the gateway does not serve without them), then the feeds: the push
        subscribes before the first poll, so nothing revoked falls between the two."""
        await self.jwks.start()
        try:
            if self.push is not None:
                await self.push.start()  # never fails for the broker: polling covers an outage
            if self.feed is not None:
                await self.feed.start()
            if self.policies is not None:
                await self.policies.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for part in (self.policies, self.push, self.feed):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        await self.jwks.stop()

    def report(self) -> dict[str, Any]:
        """What ``/readyz`` says of token verification (it never makes the gateway unready: stale
        keys and a down revocation push are served through, see docs/edge-security.md)."""
        jwks = self.jwks
        found: dict[str, Any] = {
            "jwks": {"keys": len(jwks.keyset), "stale": jwks.stale, "last_error": jwks.last_error}
        }
        if self.feed is not None:
            revocations: dict[str, Any] = {
                "known": len(self.revocations),
                "poll": {"interval": self.feed.interval, "last_error": self.feed.last_error},
            }
            if self.push is not None:
                revocations["push"] = self.push.report()
            found["revocations"] = revocations
        return found

    def verify(self, token: str | bytes) -> Verified:
        """Verify ``token`` (no I/O); raises a TokenError, TokenUnknownKey among them."""
        claims = self.verifier.verify(token)
        found = self._verified.get(token)
        if found is not None and found.claims is claims:
            return found
        return self._remember(token, claims)

    async def verify_async(self, token: str | bytes) -> Verified:
        """Like :meth:`verify`, refreshing the JWKS once (rate-limited) for an unknown ``kid``."""
        try:
            return self.verify(token)
        except TokenUnknownKey:
            claims = await self.verifier.verify_async(token)
            return self._remember(token, claims)

    def _remember(self, token: str | bytes, claims: Claims) -> Verified:
        raw = claims.raw
        client = raw.get("client_id")
        client_id = client if isinstance(client, str) else None
        text = token.decode("ascii") if isinstance(token, bytes) else token
        identity = Identity(claims.sub, client_id, claims.roles, claims.scopes, raw, text)
        headers = self._encoder.encode(claims.sub, claims.roles, claims.scopes, client_id, raw)
        verified = Verified(claims, identity, headers, claims.attributes())
        cache = self._verified
        cache[token] = verified
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return verified
