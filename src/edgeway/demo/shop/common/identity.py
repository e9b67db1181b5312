"""How a shop service checks its callers when clients reach it directly (the Direct pattern).

The service kit re-verifies bearer tokens against the security service's JWKS. The shop plugs
the security library's verifier into the kit's ``verifier=`` seam instead, because it also
honours revocations: the security service publishes each one over the bus (the service's
:class:`~edgeway.security.revocation.RevocationSubscriber` adds it to the deny-list within
milliseconds) and a :class:`~edgeway.security.revocation.RevocationFeed` polls it as the catch-up,
so a token revoked at logout stops working at every service at once — with no call to the
security service per request (the verified token is cached).
"""

from __future__ import annotations

from typing import Any

from edgeway.security.errors import JwksUnavailable, TokenError
from edgeway.security.revocation import RevocationFeed, RevocationList
from edgeway.security.verify import JwksClient, TokenVerifier
from edgeway.service.errors import AuthenticationError, JwksUnavailableError

__all__ = ["RevocationAwareVerifier"]


class RevocationAwareVerifier:
    """The kit's ``TokenVerifier`` protocol over :class:`edgeway.security.verify.TokenVerifier`."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        revocations_url: str | None,
        poll_interval: float = 1.0,
    ) -> None:
        self.jwks = JwksClient(jwks_url, min_refresh_interval=5.0)
        self.revocations = RevocationList()
        self.verifier = TokenVerifier(
            self.jwks, issuer=issuer, audience=audience, revocations=self.revocations
        )
        self.feed = (
            RevocationFeed(revocations_url, self.revocations, interval=poll_interval)
            if revocations_url
            else None
        )

    async def start(self) -> None:
        try:
            await self.jwks.start()
        except JwksUnavailable as exc:
            raise JwksUnavailableError(str(exc)) from exc
        if self.feed is not None:
            await self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        await self.jwks.stop()

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            claims = await self.verifier.verify_async(token)
        except TokenError as exc:
            raise AuthenticationError(str(exc)) from exc
        return dict(claims.raw)
