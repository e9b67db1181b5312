"""TokenVerifier: the attack suite at the library level, the cache, the revocation list."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeway.security.errors import (
    JwksUnavailable,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenNotYetValid,
    TokenRevoked,
    TokenUnknownKey,
)
from edgeway.security.keys import KeyRing, SigningKey
from edgeway.security.tokens import TokenIssuer, encode_jwt
from edgeway.security.verify import JwksClient, KeySet, TokenVerifier, VerificationKey, bearer_token

ISS = "https://auth.test"
AUD = "shop"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keyset_of(ring: KeyRing) -> KeySet:
    return KeySet.from_jwks(ring.jwks())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(ring: KeyRing, header: Any, payload: Any) -> str:
    """A compact JWS of any header and payload JSON, validly signed by the ring's active key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(ring.active.sign(signing_input.encode()))}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def issuer(ring: KeyRing, clock: Clock) -> TokenIssuer:
    return TokenIssuer(ring, ISS, AUD, ttl=300, clock=clock)


@pytest.fixture
def verifier(ring: KeyRing, clock: Clock) -> TokenVerifier:
    return TokenVerifier(keyset_of(ring), issuer=ISS, audience=AUD, leeway=5, clock=clock)


def claims_for(clock: Clock, **over: Any) -> dict[str, Any]:
    now = int(clock.now)
    base = {"iss": ISS, "sub": "alice", "aud": AUD, "exp": now + 300, "nbf": now, "iat": now, "jti": "j1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_valid_token_verifies_and_exposes_its_claims(alg: str, clock: Clock) -> None:
    ring = KeyRing.generate(alg)  # type: ignore[arg-type]
    issued = TokenIssuer(ring, ISS, AUD, clock=clock).issue("alice", scope=["a", "b"], roles=["customer"])
    claims = TokenVerifier(keyset_of(ring), issuer=ISS, audience=AUD, clock=clock).verify(issued.token)
    assert claims.sub == "alice"
    assert claims.scopes == {"a", "b"}
    assert claims.roles == {"customer"}
    assert claims.jti == issued.jti
    assert claims.has_role("customer")
    assert claims.has_scope("a")


def test_bytes_and_str_tokens_both_verify(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue("alice").token
    assert verifier.verify(token.encode()).sub == verifier.verify(token).sub == "alice"


def test_tokens_made_by_pyjwt_verify_too(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    token = jwt.encode(
        claims_for(clock),
        ring.active.private_key,
        algorithm="EdDSA",
        headers={"kid": ring.active.kid, "typ": "at+jwt"},
    )
    assert verifier.verify(token).sub == "alice"


# --- typ: RFC 9068 access tokens ------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"])
def test_the_access_token_type_is_accepted_in_every_spelling(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock, typ: str
) -> None:
    assert verifier.verify(encode_jwt(ring.active, claims_for(clock), typ=typ)).sub == "alice"


@pytest.mark.parametrize("typ", ["JWT", "id+jwt", "application/jwt", "logout+jwt", "", None])
def test_a_token_of_another_type_is_not_an_access_token(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock, typ: str | None
) -> None:
    # An ID token (typ JWT) signed by the same keys must not open an API: RFC 9068 section 4.
    header = {"alg": ring.active.alg, "kid": ring.active.kid, **({} if typ is None else {"typ": typ})}
    token = signed(ring, header, claims_for(clock))
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    assert info.value.reason == "wrong_token_type"


def test_other_token_types_can_be_accepted_for_a_third_party_issuer(ring: KeyRing, clock: Clock) -> None:
    token = jwt.encode(  # PyJWT's default header, as many identity providers issue
        claims_for(clock), ring.active.private_key, algorithm="EdDSA", headers={"kid": ring.active.kid}
    )
    keys = keyset_of(ring)
    lenient = TokenVerifier(keys, issuer=ISS, audience=AUD, token_types=["at+jwt", "JWT"], clock=clock)
    unchecked = TokenVerifier(keys, issuer=ISS, audience=AUD, token_types=None, clock=clock)
    assert lenient.verify(token).sub == unchecked.verify(token).sub == "alice"
    with pytest.raises(TokenInvalid):  # an unchecked typ must still be a string
        unchecked.verify(encode_jwt(ring.active, claims_for(clock), typ=["at+jwt"]))  # type: ignore[arg-type]


# --- the attack suite -----------------------------------------------------------------------------


def test_missing_token_is_token_missing(verifier: TokenVerifier) -> None:
    for empty in (None, "", b""):
        with pytest.raises(TokenMissing):
            verifier.verify(empty)


def test_alg_none_is_rejected(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    header = b64(json.dumps({"alg": "none", "kid": ring.active.kid}).encode())
    payload = b64(json.dumps(claims_for(clock)).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.AAAA"):
        with pytest.raises(TokenInvalid) as info:
            verifier.verify(token)
        assert info.value.reason in {"malformed", "alg_not_allowed"}
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(f"{header}.{payload}.AAAA")
    assert info.value.reason == "alg_not_allowed"


def test_hs256_signed_with_the_public_key_is_rejected(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock
) -> None:
    public_pem = ring.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = ring.active.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import hashlib
    import hmac

    for secret in (public_pem, raw, json.dumps(ring.active.public_jwk()).encode()):
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": ring.active.kid}).encode())
        payload = b64(json.dumps(claims_for(clock)).encode())
        sig = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        with pytest.raises(TokenInvalid) as info:
            verifier.verify(f"{header}.{payload}.{sig}")
        assert info.value.reason == "alg_not_allowed"


def test_alg_that_does_not_match_the_key_is_rejected(clock: Clock) -> None:
    ed, ec = SigningKey.generate("EdDSA"), SigningKey.generate("ES256")
    # A key set where the EdDSA key's kid is advertised as ES256 must not verify an ES256 token.
    keys = KeySet([VerificationKey(ec.kid, "EdDSA", ed.public_key)])
    token = encode_jwt(ec, claims_for(clock))
    with pytest.raises(TokenInvalid) as info:
        TokenVerifier(keys, issuer=ISS, audience=AUD, clock=clock).verify(token)
    assert info.value.reason == "alg_mismatch"


def test_expired_token_is_rejected_after_the_leeway(
    issuer: TokenIssuer, verifier: TokenVerifier, clock: Clock
) -> None:
    token = issuer.issue("alice").token
    clock.now += 300 + 5  # exactly at exp + leeway: still fine
    verifier.verify(token)
    clock.now += 1
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_expired_token_is_rejected_even_when_cached(
    issuer: TokenIssuer, verifier: TokenVerifier, clock: Clock
) -> None:
    token = issuer.issue("alice").token
    verifier.verify(token)
    clock.now += 400
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_not_yet_valid_token_is_rejected(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    token = encode_jwt(ring.active, claims_for(clock, nbf=int(clock.now) + 60))
    with pytest.raises(TokenNotYetValid):
        verifier.verify(token)
    future_iat = encode_jwt(ring.active, claims_for(clock, iat=int(clock.now) + 60))
    with pytest.raises(TokenNotYetValid):
        verifier.verify(future_iat)
    within_leeway = encode_jwt(ring.active, claims_for(clock, nbf=int(clock.now) + 4))
    assert verifier.verify(within_leeway).sub == "alice"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"iss": "https://evil.test"}, "bad_issuer"),
        ({"iss": None}, "bad_issuer"),
        ({"aud": "other"}, "bad_audience"),
        ({"aud": ["other", "another"]}, "bad_audience"),
        ({"aud": None}, "bad_audience"),
        ({"exp": None}, "missing_exp"),
        ({"exp": "tomorrow"}, "malformed"),
        ({"sub": None}, "missing_sub"),
        ({"jti": None}, "missing_jti"),
    ],
)
def test_wrong_or_missing_claims_are_rejected(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock, override: dict[str, Any], reason: str
) -> None:
    token = encode_jwt(ring.active, claims_for(clock, **override))
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    assert info.value.reason == reason


def test_audience_list_containing_ours_is_accepted(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock
) -> None:
    token = encode_jwt(ring.active, claims_for(clock, aud=["billing", AUD]))
    assert verifier.verify(token).aud == ("billing", AUD)


def test_unknown_kid_is_rejected_as_unknown_key(verifier: TokenVerifier, clock: Clock) -> None:
    stranger = SigningKey.generate()
    with pytest.raises(TokenUnknownKey) as info:
        verifier.verify(encode_jwt(stranger, claims_for(clock)))
    assert info.value.reason == "unknown_kid"


def test_token_from_another_key_set_with_a_forged_kid_fails_the_signature(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock
) -> None:
    other = KeyRing.generate().active
    forged = SigningKey(ring.active.kid, "EdDSA", other.private_key, 0.0)  # our kid, their key
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(encode_jwt(forged, claims_for(clock)))
    assert info.value.reason == "bad_signature"


def test_tampered_payload_is_rejected(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, payload, sig = issuer.issue("alice", roles=["customer"]).token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(f"{header}.{b64(json.dumps(claims).encode())}.{sig}")
    assert info.value.reason == "bad_signature"


def test_tampered_signature_is_rejected(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, payload, sig = issuer.issue("alice").token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(f"{header}.{payload}.{b64(bytes(raw))}")
    assert info.value.reason == "bad_signature"
    with pytest.raises(TokenInvalid):
        verifier.verify(f"{header}.{payload}.{sig[:-4]}")


def test_non_canonical_spellings_are_rejected(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue("alice").token
    header, payload, sig = token.split(".")
    for bad in (
        token + "=",
        f"{header}.{payload}.{sig}.x",
        f"{header}.{payload}",
        "+" + token,
        " " + token,
        token + "\n",
    ):
        with pytest.raises(TokenInvalid) as info:
            verifier.verify(bad)
        assert info.value.reason in {"malformed", "bad_signature"}


def test_crit_header_is_rejected(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    token = jwt.encode(
        claims_for(clock),
        ring.active.private_key,
        algorithm="EdDSA",
        headers={"kid": ring.active.kid, "crit": ["exp"]},
    )
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    assert info.value.reason == "unsupported_header"


def test_revoked_jti_is_rejected_on_every_call_cached_or_not(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    issued = issuer.issue("alice")
    verifier.verify(issued.token)  # now cached
    verifier.revocations.add(issued.jti, issued.expires_at)
    with pytest.raises(TokenRevoked):
        verifier.verify(issued.token)
    verifier.clear_cache()
    with pytest.raises(TokenRevoked):
        verifier.verify(issued.token)


def test_a_withdrawn_key_stops_cached_tokens_too(
    ring: KeyRing, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.issue("alice").token
    verifier.verify(token)
    verifier.keys.replace([])
    with pytest.raises(TokenUnknownKey):
        verifier.verify(token)


def test_verify_only_allows_asymmetric_algorithms() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        TokenVerifier(KeySet(), issuer=ISS, audience=AUD, algorithms=["HS256"])


# --- cache ----------------------------------------------------------------------------------------


def test_a_repeated_token_skips_the_signature_check(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue("alice").token
    first = verifier.verify(token)
    second = verifier.verify(token)
    assert first is second
    assert (verifier.cache_misses, verifier.cache_hits) == (1, 1)


def test_the_cache_is_bounded_lru(ring: KeyRing, issuer: TokenIssuer, clock: Clock) -> None:
    verifier = TokenVerifier(keyset_of(ring), issuer=ISS, audience=AUD, cache_size=2, clock=clock)
    a, b, c = (issuer.issue(s).token for s in "abc")
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now most recent
    verifier.verify(c)  # evicts b
    verifier.verify(a)
    assert verifier.cache_hits == 2
    verifier.verify(b)
    assert verifier.cache_misses == 4


def test_claims_cannot_be_mutated_through_the_cache(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    claims = verifier.verify(issuer.issue("alice").token)
    with pytest.raises(TypeError):
        claims.raw["sub"] = "admin"  # type: ignore[index]


def test_bearer_token_parses_the_authorization_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token(b"bearer abc") == b"abc"
    for bad in (None, "", "Basic abc", "Bearer ", "Bearer"):
        with pytest.raises(TokenMissing):
            bearer_token(bad)


def test_time_is_wall_clock_by_default(ring: KeyRing) -> None:
    issued = TokenIssuer(ring, ISS, AUD).issue("alice")
    assert TokenVerifier(keyset_of(ring), issuer=ISS, audience=AUD).verify(issued.token).exp > time.time()


def test_token_signed_by_a_rotated_out_key_verifies_until_the_key_is_pruned(clock: Clock) -> None:
    ring = KeyRing.generate(now=clock.now)
    issuer = TokenIssuer(ring, ISS, AUD, ttl=300, clock=clock)
    old_token = issuer.issue("alice").token
    ring.rotate(overlap=330, now=clock.now)
    new_token = issuer.issue("alice").token
    keys = keyset_of(ring)
    verifier = TokenVerifier(keys, issuer=ISS, audience=AUD, clock=clock)
    assert verifier.verify(old_token).kid != verifier.verify(new_token).kid
    clock.now += 331
    ring.prune(now=clock.now)
    keys.replace_from_jwks(ring.jwks())
    with pytest.raises(TokenUnknownKey):
        verifier.verify(old_token)
    assert verifier.verify(issuer.issue("alice").token).sub == "alice"


# --- options for the service kit: unchecked iss/aud, optional jti, a lazily started JWKS client --


def test_issuer_and_audience_none_turn_those_checks_off(ring: KeyRing, clock: Clock) -> None:
    verifier = TokenVerifier(keyset_of(ring), issuer=None, audience=None, clock=clock)
    anywhere = verifier.verify(encode_jwt(ring.active, claims_for(clock, iss="https://other.test", aud="x")))
    assert (anywhere.iss, anywhere.aud) == ("https://other.test", ("x",))
    bare = verifier.verify(encode_jwt(ring.active, claims_for(clock, iss=None, aud=None)))
    assert (bare.iss, bare.aud) == ("", ())
    # Unchecked is not unparsed: an issuer that is not a string is still refused.
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(encode_jwt(ring.active, claims_for(clock, iss=["a", "b"])))
    assert info.value.reason == "malformed"


def test_only_the_check_turned_off_is_skipped(ring: KeyRing, clock: Clock) -> None:
    verifier = TokenVerifier(keyset_of(ring), issuer=ISS, audience=None, clock=clock)
    assert verifier.verify(encode_jwt(ring.active, claims_for(clock, aud="x"))).sub == "alice"
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(encode_jwt(ring.active, claims_for(clock, iss="https://evil.test", jti="j2")))
    assert info.value.reason == "bad_issuer"


def test_an_empty_issuer_or_audience_list_is_still_a_configuration_error(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="at least one issuer"):
        TokenVerifier(keyset_of(ring), issuer=[], audience=AUD)
    with pytest.raises(ValueError, match="at least one issuer"):
        TokenVerifier(keyset_of(ring), issuer=ISS, audience=())


def test_jti_is_optional_when_configured_so(ring: KeyRing, clock: Clock) -> None:
    verifier = TokenVerifier(keyset_of(ring), issuer=ISS, audience=AUD, require_jti=False, clock=clock)
    claims = verifier.verify(encode_jwt(ring.active, claims_for(clock, jti=None)))
    assert (claims.sub, claims.jti) == ("alice", None)
    verifier.revocations.add("j1", clock.now + 600)
    with pytest.raises(TokenRevoked):  # a token that has a jti is still checked against the list
        verifier.verify(encode_jwt(ring.active, claims_for(clock, jti="j1", sub="bob")))


class JwksServer:
    """A real HTTP server on loopback publishing a JWKS; ``status`` makes it fail on demand."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.status = 200
        self.fetches = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.fetches += 1
        body = json.dumps(self.document).encode() if self.status == 200 else b"{}"
        head = (
            f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()


@pytest.fixture
async def jwks_server(ring: KeyRing) -> AsyncIterator[JwksServer]:
    server = JwksServer(ring.jwks())
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/.well-known/jwks.json"
    async with listener:
        yield server


async def test_a_lazy_jwks_client_fetches_on_the_first_verification(
    ring: KeyRing, jwks_server: JwksServer
) -> None:
    jwks = JwksClient(jwks_server.url, lazy=True)
    verifier = TokenVerifier(jwks, issuer=ISS, audience=AUD)
    assert jwks_server.fetches == 0
    assert not jwks.started
    token = TokenIssuer(ring, ISS, AUD).issue("alice").token
    try:
        assert (await verifier.verify_async(token)).sub == "alice"
        assert (await verifier.verify_async(token)).sub == "alice"
        assert jwks_server.fetches == 1
        assert jwks.started  # the background refresh runs from now on
    finally:
        await jwks.stop()


async def test_concurrent_first_verifications_share_one_fetch(ring: KeyRing, jwks_server: JwksServer) -> None:
    jwks = JwksClient(jwks_server.url, lazy=True)
    verifier = TokenVerifier(jwks, issuer=ISS, audience=AUD)
    tokens = [TokenIssuer(ring, ISS, AUD).issue(f"user-{i}").token for i in range(10)]
    try:
        claims = await asyncio.gather(*(verifier.verify_async(t) for t in tokens))
        assert {c.sub for c in claims} == {f"user-{i}" for i in range(10)}
        assert jwks_server.fetches == 1
    finally:
        await jwks.stop()


async def test_a_lazy_client_without_keys_is_unavailable_and_retries_with_backoff(
    ring: KeyRing, jwks_server: JwksServer
) -> None:
    now = [100.0]
    jwks = JwksClient(
        jwks_server.url, lazy=True, start_backoff=1.0, min_refresh_interval=3.0, clock=lambda: now[0]
    )
    verifier = TokenVerifier(jwks, issuer=ISS, audience=AUD)
    token = TokenIssuer(ring, ISS, AUD).issue("alice").token
    jwks_server.status = 503
    attempts: list[int] = []
    try:
        # Attempts may happen 1, 2, then 3 (capped) seconds apart; calls between them fetch nothing.
        for step in range(14):
            now[0] = 100.0 + step * 0.5
            with pytest.raises(JwksUnavailable, match=r"could not fetch the JWKS from .*503"):
                await verifier.verify_async(token)
            attempts.append(jwks_server.fetches)
        assert attempts == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4]
        jwks_server.status = 200
        now[0] += 3.0
        assert (await verifier.verify_async(token)).sub == "alice"
        assert jwks.started
        assert jwks_server.fetches == 5
    finally:
        await jwks.stop()


async def test_a_lazy_client_needs_a_usable_key(ring: KeyRing, jwks_server: JwksServer) -> None:
    jwks_server.document = {"keys": [{"kid": "rsa-1", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}
    jwks = JwksClient(jwks_server.url, lazy=True)
    verifier = TokenVerifier(jwks, issuer=ISS, audience=AUD)
    with pytest.raises(JwksUnavailable, match="no usable signing key"):
        await verifier.verify_async(TokenIssuer(ring, ISS, AUD).issue("alice").token)
    assert not jwks.started
    await jwks.stop()


async def test_a_client_that_is_not_lazy_is_never_started_by_verification(jwks_server: JwksServer) -> None:
    # The gateway starts its client itself (and refuses to serve without keys): verification
    # must not do that for it.
    jwks = JwksClient(jwks_server.url)
    await jwks.ensure_started()
    assert not jwks.started
    assert jwks_server.fetches == 0
    await jwks.stop()


# --- malformed headers and claims: always a TokenError (401), never another exception -------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
JSON_VALUES = st.recursive(
    SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
HEADER_PARAMS = ["alg", "kid", "typ", "cty", "crit", "jku", "x5c"]
CLAIMS = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "roles", "scope", "client_id", "sid"]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": ["EdDSA"]}, "malformed"),
        ({"alg": {"EdDSA": 1}}, "malformed"),
        ({"alg": 1}, "malformed"),
        ({"kid": ["k"]}, "malformed"),
        ({"kid": {"k": 1}}, "malformed"),
        ({"typ": ["at+jwt"]}, "malformed"),
        ({"typ": {}}, "malformed"),
        ({"cty": []}, "malformed"),
        ({"cty": ""}, "unsupported_header"),  # found by the fuzz test below
        ({"cty": "JWT"}, "unsupported_header"),  # a nested token: never verified through its wrapper
        ({"crit": []}, "unsupported_header"),
        ({"alg": None}, "alg_not_allowed"),
        ({"kid": None}, "missing_kid"),
    ],
)
def test_a_header_parameter_of_the_wrong_type_is_malformed(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock, header: dict[str, Any], reason: str
) -> None:
    base = {"alg": ring.active.alg, "typ": "at+jwt", "kid": ring.active.kid}
    full = {k: v for k, v in {**base, **header}.items() if v is not None}
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(signed(ring, full, claims_for(clock)))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "override",
    [
        {"iss": [ISS]},
        {"iss": {"iss": ISS}},
        {"sub": ["alice"]},
        {"sub": {"id": 1}},
        {"aud": [AUD, {"x": 1}]},
        {"aud": {"aud": AUD}},
        {"aud": 7},
        {"exp": [1]},
        {"exp": True},
        {"nbf": "now"},
        {"iat": {}},
        {"jti": ["j1"]},
        {"jti": 5},
        {"roles": "admin"},
        {"roles": ["admin", ["root"]]},
        {"roles": {"admin": True}},
        {"scope": ["orders"]},
        {"client_id": {"id": "web"}},
        {"nested": functools.reduce(lambda inner, _: [inner], range(40), cast(Any, []))},
    ],
)
@pytest.mark.parametrize("issuer", [ISS, None])
def test_a_claim_of_the_wrong_type_in_a_signed_token_is_malformed(
    ring: KeyRing, clock: Clock, override: dict[str, Any], issuer: str | None
) -> None:
    # issuer None: the service kit's verifier when no issuer is configured checks types all the same.
    verifier = TokenVerifier(keyset_of(ring), issuer=issuer, audience=AUD, clock=clock)
    token = encode_jwt(ring.active, claims_for(clock, **override))
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    assert info.value.reason == "malformed"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(HEADER_PARAMS), value=JSON_VALUES)
def test_fuzzed_header_parameters_are_refused_with_a_token_error_or_verify(
    ring: KeyRing, verifier: TokenVerifier, clock: Clock, name: str, value: Any
) -> None:
    header = {"alg": ring.active.alg, "typ": "at+jwt", "kid": ring.active.kid, name: value}
    try:
        claims = verifier.verify(signed(ring, header, claims_for(clock)))
    except TokenError:
        return
    assert claims.sub == "alice"
    assert name in ("jku", "x5c") or header[name] == {"alg": ring.active.alg, "kid": ring.active.kid}.get(
        name
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CLAIMS), value=JSON_VALUES, issuer=st.sampled_from([ISS, None]))
def test_fuzzed_claims_in_a_signed_token_are_refused_with_a_token_error_or_verify(
    ring: KeyRing, clock: Clock, name: str, value: Any, issuer: str | None
) -> None:
    verifier = TokenVerifier(keyset_of(ring), issuer=issuer, audience=None, clock=clock, cache_size=0)
    payload = {**claims_for(clock), name: value}
    header = {"alg": ring.active.alg, "typ": "at+jwt", "kid": ring.active.kid}
    try:
        claims = verifier.verify(signed(ring, header, payload))
    except TokenError:
        return
    # What verified has the types its readers rely on.
    assert isinstance(claims.sub, str)
    assert isinstance(claims.iss, str)
    assert all(isinstance(a, str) for a in claims.aud)
    assert all(isinstance(r, str) for r in claims.roles)
    assert orjson.loads(orjson.dumps(claims.attributes()))["sub"] == claims.sub  # re-encodable
