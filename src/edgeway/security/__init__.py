"""edgeway.security: the token and policy library, and the security service.

The library (what gateways and services import) has no server dependencies:

* :mod:`.keys` — signing keys, RFC 7638 key ids, the rotating :class:`KeyRing`, key files;
* :mod:`.tokens` — :class:`TokenIssuer` for access tokens, opaque refresh tokens;
* :mod:`.verify` — :class:`TokenVerifier` (synchronous, cached) and :class:`JwksClient`;
* :mod:`.revocation` — the ``jti`` deny-list, kept current by polling (:class:`RevocationFeed`)
  and by ``TokenRevokedEvent`` over the event bus (:class:`RevocationSubscriber`);
* :mod:`.policy` — RBAC/ABAC :class:`PolicySet` and its synchronised :class:`PolicyReplica`.

The service lives in :mod:`edgeway.security_service` (``create_security_app``).
"""

from edgeway.security.errors import (
    SecurityError,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
)
from edgeway.security.keys import KeyRing, SigningKey
from edgeway.security.policy import Decision, PolicyReplica, PolicySet
from edgeway.security.revocation import (
    RevocationFeed,
    RevocationList,
    RevocationSubscriber,
    TokenRevokedEvent,
)
from edgeway.security.tokens import TokenIssuer
from edgeway.security.verify import Claims, JwksClient, KeySet, TokenVerifier, bearer_token

__all__ = [
    "Claims",
    "Decision",
    "JwksClient",
    "KeyRing",
    "KeySet",
    "PolicyReplica",
    "PolicySet",
    "RevocationFeed",
    "RevocationList",
    "RevocationSubscriber",
    "SecurityError",
    "SigningKey",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenIssuer",
    "TokenMissing",
    "TokenRevoked",
    "TokenRevokedEvent",
    "TokenVerifier",
    "bearer_token",
]
