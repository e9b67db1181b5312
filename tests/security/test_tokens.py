"""Issuing tokens: claims, headers, interop with PyJWT, refresh token hashing."""

from __future__ import annotations

import jwt
import pytest

from edgeway.security.errors import SecurityConfigError
from edgeway.security.keys import KeyRing
from edgeway.security.tokens import TokenIssuer, hash_refresh_token, new_refresh_token


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_access_token_carries_the_registered_claims_and_verifies_with_pyjwt(alg: str) -> None:
    ring = KeyRing.generate(alg)  # type: ignore[arg-type]
    issuer = TokenIssuer(ring, "https://auth.test", "shop", ttl=300, clock=lambda: 1_000_000.0)
    issued = issuer.issue(
        "alice", scope=["orders:read", "profile"], roles=["customer"], claims={"region": "eu"}
    )
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": alg, "typ": "at+jwt", "kid": ring.active.kid}
    claims = jwt.decode(
        issued.token,
        ring.active.public_key,
        algorithms=[alg],
        audience="shop",
        issuer="https://auth.test",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "alice"
    assert claims["exp"] == 1_000_300 == issued.expires_at
    assert claims["iat"] == claims["nbf"] == 1_000_000
    assert claims["jti"] == issued.jti
    assert claims["scope"] == "orders:read profile"
    assert claims["roles"] == ["customer"]
    assert claims["region"] == "eu"


def test_every_token_gets_a_fresh_jti() -> None:
    issuer = TokenIssuer(KeyRing.generate(), "iss", "aud")
    assert len({issuer.issue("bob").jti for _ in range(50)}) == 50


def test_custom_claims_cannot_override_registered_ones() -> None:
    issuer = TokenIssuer(KeyRing.generate(), "iss", "aud")
    with pytest.raises(SecurityConfigError, match="registered claims"):
        issuer.issue("bob", claims={"sub": "admin"})


def test_issued_token_repr_hides_the_token() -> None:
    issued = TokenIssuer(KeyRing.generate(), "iss", "aud").issue("bob")
    assert issued.token not in repr(issued)


def test_refresh_tokens_are_random_and_stored_only_as_a_hash() -> None:
    one, two = new_refresh_token(), new_refresh_token()
    assert one.value != two.value
    assert one.digest == hash_refresh_token(one.value)
    assert one.value not in one.digest
    assert one.value not in repr(one)
    assert len(one.value) > 40
