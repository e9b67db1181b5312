"""Who is calling: the verified caller as a FastAPI dependency, and role/scope guards.

The gateway authenticates the client once and forwards the request with the bearer token and
the claims it read from it in headers (:data:`SUBJECT_HEADER` and friends). A service does not
take those headers on trust by default: a request that reached it without passing the gateway
could carry anything. So:

- with an ``Authorization: Bearer`` token, the token is verified locally by the same verifier the
  gateway uses (:class:`edgeway.security.verify.TokenVerifier`) against the security service's
  JWKS (fetched on first use, refreshed in the background; no call per request): signature,
  algorithm in the allow-list (EdDSA, ES256; never ``none`` or HMAC), ``exp``/``nbf``/``iat``,
  ``iss`` and ``aud`` when configured, and the security service's revocations (its
  ``/revocations`` feed, polled in the background like the gateway does), so a token revoked at
  logout stops working here too. If forwarded claim headers are present too, their subject must
  match the token's;
- without a token, the forwarded headers are used only when the app is configured with
  ``trust_gateway_headers=True`` (a network policy guarantees only the gateway reaches it);
- otherwise the request is rejected with 401 (problem+json with a ``reason``,
  ``WWW-Authenticate: Bearer``).

Claims follow the security service's token format: ``sub``, ``roles`` (a list), ``scope`` (one
space-separated string).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import httpx
import orjson
from fastapi import Depends, Request

from edgeway.security import verify as security
from edgeway.security.errors import JwksUnavailable, TokenError, TokenMissing
from edgeway.security.keys import ALGORITHMS
from edgeway.security.revocation import RevocationFeed, RevocationList
from edgeway.service.errors import AuthenticationError, JwksUnavailableError, PermissionDeniedError

if TYPE_CHECKING:
    from edgeway.service.settings import ServiceSettings

__all__ = [
    "ALLOWED_ALGORITHMS",
    "CLAIMS_HEADER",
    "ROLES_HEADER",
    "SCOPES_HEADER",
    "SUBJECT_HEADER",
    "Caller",
    "Identity",
    "IdentityConfig",
    "JwksVerifier",
    "TokenVerifier",
    "bearer",
    "current_identity",
    "identify",
    "require_roles",
    "require_scopes",
]

ALLOWED_ALGORITHMS = ALGORITHMS
SUBJECT_HEADER = "x-edgeway-subject"
ROLES_HEADER = "x-edgeway-roles"  # comma-separated
SCOPES_HEADER = "x-edgeway-scopes"  # space-separated, like the scope claim
CLAIMS_HEADER = "x-edgeway-claims"  # base64url(JSON object) of the remaining claims, optional


class TokenVerifier(Protocol):
    """Verifies a bearer token and returns its claims, or raises AuthenticationError."""

    async def verify(self, token: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    token: str | None = None
    source: Literal["token", "gateway"] = "token"

    def has_roles(self, *roles: str) -> bool:
        return set(roles) <= self.roles

    def has_scopes(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes


class JwksVerifier:
    """The built-in :class:`TokenVerifier`: :class:`edgeway.security.verify.TokenVerifier` (the
    gateway's, with its verified-token cache) behind the kit's protocol and errors.

    Token errors become :class:`AuthenticationError` with the security library's ``reason``; no
    key set (the JWKS never fetched) becomes :class:`JwksUnavailableError`, a 503.

    With a ``feed`` (the security service's ``/revocations``, filling the verifier's deny-list) the
    first token waits for one poll of it, as it waits for the key set, then the feed polls in the
    background: a revoked token is refused from the first request on. A failed poll keeps the list
    it has and is retried, as at the gateway. ``revocations`` is the deny-list, for a service that
    also receives revocations over its event bus (a
    :class:`~edgeway.security.revocation.RevocationSubscriber` on it).
    """

    def __init__(self, verifier: security.TokenVerifier, feed: RevocationFeed | None = None) -> None:
        self.verifier = verifier
        self.feed = feed
        self._feed_started = False
        self._feed_lock = asyncio.Lock()

    @property
    def revocations(self) -> RevocationList:
        return self.verifier.revocations

    @classmethod
    def from_jwks_url(
        cls,
        url: str,
        *,
        issuer: str | None,
        audience: str | None,
        algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS,
        leeway: float = 30.0,
        require_jti: bool = False,
        token_types: Sequence[str] | None = security.ACCESS_TOKEN_TYPES,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 10.0,
        revocations_url: str | None = None,
        revocation_poll_interval: float = 2.0,
        http: httpx.AsyncClient | None = None,
    ) -> JwksVerifier:
        """A verifier whose JWKS is fetched on the first token (the service starts without the
        security service), then every ``refresh_interval`` and on an unknown ``kid`` at most once
        per ``min_refresh_interval``. ``issuer``/``audience`` ``None``: that claim is not checked;
        ``token_types`` ``None``: neither is the header's ``typ`` (else it must be one of them).
        ``revocations_url``: the security service's ``/revocations`` feed, polled every
        ``revocation_poll_interval`` seconds once the first token arrived; ``None``: no revocations."""
        jwks = security.JwksClient(
            url,
            refresh_interval=refresh_interval,
            min_refresh_interval=min_refresh_interval,
            client=http,
            lazy=True,
        )
        revocations = RevocationList()
        feed = (
            RevocationFeed(revocations_url, revocations, interval=revocation_poll_interval, client=http)
            if revocations_url
            else None
        )
        return cls(
            security.TokenVerifier(
                jwks,
                issuer=issuer,
                audience=audience,
                algorithms=algorithms,
                leeway=leeway,
                require_jti=require_jti,
                token_types=token_types,
                revocations=revocations,
            ),
            feed,
        )

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, http: httpx.AsyncClient | None = None
    ) -> JwksVerifier | None:
        """The verifier ``settings`` describe (``jwks_url``, ``token_*``, ``revocations_url``,
        ``revocation_poll_interval``), or None without a ``jwks_url``. ``http``: the client its
        fetches use (the kit's, with its TLS settings), closed by whoever made it."""
        if not settings.jwks_url:
            return None
        return cls.from_jwks_url(
            settings.jwks_url,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            token_types=settings.token_types,
            revocations_url=settings.revocation_feed(),
            revocation_poll_interval=settings.revocation_poll_interval,
            http=http,
        )

    @property
    def jwks(self) -> security.JwksClient | None:
        return self.verifier.jwks

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            if not self._feed_started and self.feed is not None:
                if self.verifier.jwks is not None:
                    await self.verifier.jwks.ensure_started()  # no keys: 503 before any poll
                await self._start_feed(self.feed)
            claims = await self.verifier.verify_async(token)
        except TokenError as exc:
            raise AuthenticationError(str(exc), exc.reason) from exc
        except JwksUnavailable as exc:
            raise JwksUnavailableError(str(exc)) from exc
        return dict(claims.raw)

    async def _start_feed(self, feed: RevocationFeed) -> None:
        async with self._feed_lock:  # concurrent first requests share one poll
            if not self._feed_started:
                await feed.start()
                self._feed_started = True

    async def aclose(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
            self._feed_started = False
        if self.verifier.jwks is not None:
            await self.verifier.jwks.stop()


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """What :func:`current_identity` needs; the app factory stores it on ``app.state``."""

    verifier: TokenVerifier | None
    trust_gateway_headers: bool = False


def identity_from_claims(claims: Mapping[str, Any], token: str | None) -> Identity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("token has no subject (sub)", "missing_sub")
    roles, scopes = security.roles_and_scopes(claims)
    return Identity(
        subject=subject, roles=roles, scopes=scopes, claims=dict(claims), token=token, source="token"
    )


def identity_from_headers(headers: Mapping[str, str]) -> Identity | None:
    subject = headers.get(SUBJECT_HEADER)
    if not subject:
        return None
    claims: dict[str, Any] = {}
    encoded = headers.get(CLAIMS_HEADER)
    if encoded:
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise AuthenticationError(f"{CLAIMS_HEADER} is not base64url-encoded JSON", "malformed") from exc
        if not isinstance(decoded, dict):
            raise AuthenticationError(f"{CLAIMS_HEADER} must encode a JSON object", "malformed")
        claims = decoded
    roles = frozenset(r.strip() for r in headers.get(ROLES_HEADER, "").split(",") if r.strip())
    scopes = frozenset(headers.get(SCOPES_HEADER, "").split())
    claims = {**claims, "sub": subject, "roles": sorted(roles), "scope": " ".join(sorted(scopes))}
    return Identity(subject=subject, roles=roles, scopes=scopes, claims=claims, source="gateway")


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` value; None without one; any other form is a 401."""
    if authorization is None:
        return None
    try:
        return str(security.bearer_token(authorization))
    except TokenMissing as exc:
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'", exc.reason) from exc


async def identify(
    config: IdentityConfig | None, authorization: str | None, headers: Mapping[str, str]
) -> Identity:
    """The verified caller of a request that came with ``authorization`` (its ``Authorization``
    value) and ``headers`` (lower-case names: the gateway's forwarded claims), by the rules in the
    module docstring. Any transport uses it: HTTP requests (:func:`current_identity`) and gRPC calls
    (:func:`edgeway.service.grpc.caller`, the metadata as headers), so both trust the same things."""
    if config is None:
        raise AuthenticationError(
            "this service is not configured to identify callers (no JWKS URL)", "not_configured"
        )
    token = bearer(authorization)
    forwarded = identity_from_headers(headers)
    if token is not None:
        if config.verifier is None:
            raise AuthenticationError(
                "this service cannot verify tokens: set EDGEWAY_JWKS_URL", "not_configured"
            )
        identity = identity_from_claims(await config.verifier.verify(token), token)
        if forwarded is not None and forwarded.subject != identity.subject:
            raise AuthenticationError(
                "forwarded subject does not match the token's subject", "subject_mismatch"
            )
        return identity
    if forwarded is not None and config.trust_gateway_headers:
        return forwarded
    raise AuthenticationError("authentication required: send 'Authorization: Bearer <token>'", "missing")


async def current_identity(request: Request) -> Identity:
    """The verified caller of this request (cached on the request once computed)."""
    cached = getattr(request.state, "edgeway_identity", None)
    if isinstance(cached, Identity):
        return cached
    config = getattr(request.app.state, "edgeway_identity", None)
    identity = await identify(
        config if isinstance(config, IdentityConfig) else None,
        request.headers.get("authorization"),
        request.headers,
    )
    request.state.edgeway_identity = identity
    return identity


Caller = Annotated[Identity, Depends(current_identity)]
"""Declare a parameter ``caller: Caller`` to get the verified caller (401 if there is none)."""


def require_roles(*roles: str) -> Callable[..., Any]:
    """A dependency that passes callers holding every one of ``roles``, else 403."""
    needed = frozenset(roles)

    async def dependency(caller: Caller) -> Identity:
        missing = needed - caller.roles
        if missing:
            raise PermissionDeniedError(f"missing role(s): {', '.join(sorted(missing))}")
        return caller

    return dependency


def require_scopes(*scopes: str) -> Callable[..., Any]:
    """A dependency that passes callers whose token grants every one of ``scopes``, else 403."""
    needed = frozenset(scopes)

    async def dependency(caller: Caller) -> Identity:
        missing = needed - caller.scopes
        if missing:
            raise PermissionDeniedError(f"missing scope(s): {', '.join(sorted(missing))}")
        return caller

    return dependency
