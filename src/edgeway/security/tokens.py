"""Issuing tokens: signed JWT access tokens and opaque refresh tokens.

Access tokens follow RFC 9068 (JWT profile for OAuth 2.0 access tokens): ``iss``, ``sub``,
``aud``, ``exp``, ``nbf``, ``iat``, ``jti``, ``scope`` as one space-separated string, plus
``roles`` and any custom claims. The header carries ``typ: at+jwt`` and the signing key's
``kid``. Custom claims cannot override the registered ones.

Refresh tokens are 256 random bits, never a JWT: the service stores only their SHA-256 (a slow
password hash buys nothing against 256 bits of entropy, and lookups must be by hash).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from edgeway.security.errors import SecurityConfigError
from edgeway.security.keys import KeyRing, SigningKey, b64url_encode

REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "roles"})
REFRESH_PREFIX = "ewr_"


def encode_jwt(key: SigningKey, payload: Mapping[str, Any], typ: str = "at+jwt") -> str:
    """Sign ``payload`` as a compact JWS with ``key``."""
    header = {"alg": key.alg, "typ": typ, "kid": key.kid}
    signing_input = (b64url_encode(orjson.dumps(header)) + "." + b64url_encode(orjson.dumps(payload))).encode(
        "ascii"
    )
    return signing_input.decode("ascii") + "." + b64url_encode(key.sign(signing_input))


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int
    claims: Mapping[str, Any]

    def __repr__(self) -> str:  # the token is a credential: keep it out of logs
        return f"IssuedToken(jti={self.jti!r}, expires_at={self.expires_at}, token=<redacted>)"


class TokenIssuer:
    """Signs access tokens with the ring's active key."""

    def __init__(
        self,
        ring: KeyRing,
        issuer: str,
        audience: str | Sequence[str],
        ttl: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise SecurityConfigError(f"access token ttl must be positive, got {ttl}")
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._clock = clock

    def issue(
        self,
        subject: str,
        *,
        audience: str | Sequence[str] | None = None,
        scope: Iterable[str] = (),
        roles: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> IssuedToken:
        if claims:
            clash = REGISTERED_CLAIMS.intersection(claims)
            if clash:
                raise SecurityConfigError(f"custom claims may not set registered claims: {sorted(clash)}")
        now = int(self._clock())
        exp = now + int(ttl if ttl is not None else self.ttl)
        aud = self.audience if audience is None else audience
        jti = secrets.token_urlsafe(16)
        payload: dict[str, Any] = {
            **(claims or {}),
            "iss": self.issuer,
            "sub": subject,
            "aud": aud if isinstance(aud, str) else list(aud),
            "exp": exp,
            "nbf": now,
            "iat": now,
            "jti": jti,
            "scope": " ".join(dict.fromkeys(scope)),
            "roles": list(dict.fromkeys(roles)),
        }
        return IssuedToken(encode_jwt(self.ring.active, payload), jti, exp, payload)


@dataclass(frozen=True, slots=True)
class RefreshToken:
    value: str
    digest: str

    def __repr__(self) -> str:
        return f"RefreshToken(digest={self.digest[:12]}..., value=<redacted>)"


def new_refresh_token() -> RefreshToken:
    value = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return RefreshToken(value, hash_refresh_token(value))


def hash_refresh_token(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
