"""What the security service holds while it runs: keys, the issuer, its own verifier, storage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from edgeway.security.keys import FileKeyStore, KeyRing, SigningKey
from edgeway.security.policy import PolicySet
from edgeway.security.revocation import RevocationList
from edgeway.security.tokens import TokenIssuer
from edgeway.security.verify import KeySet, TokenVerifier
from edgeway.security_service.events import RevocationEvents
from edgeway.security_service.passwords import Passwords
from edgeway.security_service.settings import SecuritySettings
from edgeway.security_service.store import SecurityStore


@dataclass
class SecurityState:
    settings: SecuritySettings
    store: SecurityStore
    passwords: Passwords
    keystore: FileKeyStore
    ring: KeyRing
    issuer: TokenIssuer
    keyset: KeySet
    verifier: TokenVerifier
    revocations: RevocationList
    events: RevocationEvents | None = None  # TokenRevokedEvent over the event bus, when bus_url is set
    _policies: PolicySet = field(default_factory=PolicySet)

    @classmethod
    def build(
        cls, settings: SecuritySettings, store: SecurityStore, keystore: FileKeyStore, ring: KeyRing
    ) -> SecurityState:
        audience = settings.audience[0] if len(settings.audience) == 1 else settings.audience
        keyset = KeySet.from_jwks(ring.jwks())
        revocations = RevocationList()
        return cls(
            settings=settings,
            store=store,
            passwords=Passwords(
                settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism
            ),
            keystore=keystore,
            ring=ring,
            issuer=TokenIssuer(ring, settings.issuer, audience, ttl=settings.access_token_ttl),
            keyset=keyset,
            verifier=TokenVerifier(
                keyset,
                issuer=settings.issuer,
                audience=settings.audience,
                leeway=settings.leeway,
                revocations=revocations,
            ),
            revocations=revocations,
        )

    async def revoke_jti(self, jti: str, exp: float, reason: str, now: float) -> None:
        """Deny-list one access token: the table (and the event, with a bus), then this process."""
        outbox = self.events.outbox if self.events is not None else None
        await self.store.revoke_jti(jti, exp, reason, now, outbox=outbox)
        self.revocations.add(jti, exp)
        if self.events is not None:
            self.events.committed()

    async def revoke_family(self, family_id: str, reason: str, now: float) -> list[str]:
        """Revoke a refresh family and deny-list its live access tokens, as :meth:`revoke_jti`."""
        outbox = self.events.outbox if self.events is not None else None
        jtis = await self.store.revoke_family(family_id, reason, now, outbox=outbox)
        for jti in jtis:
            self.revocations.add(jti, now + self.settings.access_token_ttl + self.settings.leeway)
        if jtis and self.events is not None:
            self.events.committed()
        return jtis

    def rotate_keys(self) -> SigningKey:
        # The configured algorithm, so changing signing_alg and rotating migrates EdDSA <-> ES256.
        new = self.ring.rotate(self.settings.overlap, alg=self.settings.signing_alg)
        self.ring.prune()
        self.keystore.save(self.ring)
        self.keyset.replace_from_jwks(self.ring.jwks())
        return new

    def prune_keys(self) -> None:
        if self.ring.prune(time.time()):
            self.keystore.save(self.ring)
            self.keyset.replace_from_jwks(self.ring.jwks())

    async def policies(self) -> PolicySet:
        """The current policy set, recompiled only when the stored version moved."""
        version = await self.store.policy_version()
        if version != self._policies.version or version == 0:
            self._policies = PolicySet(await self.store.policy_document())
        return self._policies


def state_of(request: Request) -> SecurityState:
    state: SecurityState = request.app.state.security
    return state
