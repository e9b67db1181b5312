"""Config of authentication at the edge: who may call a route (``auth`` on a route) and how the
gateway verifies tokens (``auth`` at the top level: JWKS, issuer, audience, revocations,
identity headers).

Checks that need the whole config (a route's ``auth`` needs the top-level ``auth``; a policy
template may only use the route's path parameters) are in :func:`auth_problems`, which the
top-level cross-check calls so each problem is reported with its key path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import TOKEN, HeaderName, LocatedProblemsError, StrictModel, broker_setting
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import Route


AuthMode = Literal["required", "optional", "none"]
SAFE_ALGORITHMS = ("EdDSA", "ES256")
# Always stripped from client requests: a service must be able to trust what the gateway sends.
SPOOFABLE_PREFIXES = ("x-user-", "x-edgeway-")
TEMPLATE_PARAM = re.compile(r"\{([^{}]*)\}")


def _http_url(value: str, what: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise PydanticCustomError(
            "url", "{what} must be an http:// or https:// URL, got '{value}'", {"what": what, "value": value}
        )
    return value


def template_params(template: str) -> list[str]:
    """The ``{name}`` parameters a template uses, in order."""
    return TEMPLATE_PARAM.findall(template)


class IdentityHeaders(StrictModel):
    """Header names carrying the verified identity to services (what `edgeway.service` reads)."""

    subject: HeaderName = Field("X-Edgeway-Subject", description="The token's `sub`.")
    roles: HeaderName = Field("X-Edgeway-Roles", description="The token's `roles`, comma-separated.")
    scopes: HeaderName = Field("X-Edgeway-Scopes", description="The token's `scope`, space-separated.")
    client: HeaderName = Field(
        "X-Edgeway-Client", description="The token's `client_id` claim (absent when the token has none)."
    )
    claims: HeaderName = Field(
        "X-Edgeway-Claims", description="Every claim as base64url JSON, sent when `forward_claims` is true."
    )
    forward_claims: bool = Field(
        False, description="Also send every verified claim (base64url JSON) in the `claims` header."
    )

    def names(self) -> list[str]:
        return [self.subject, self.roles, self.scopes, self.client, self.claims]


_MOVED_KEYS = {"revocations_url": "url", "revocations_interval": "interval"}


class RevocationBus(StrictModel):
    """Revocations pushed over the event bus: every gateway instance gets every one at once."""

    url: str = Field(
        description="The broker the security service publishes its revocations to (its `bus_url`): "
        "`nats://host:4222` (NATS JetStream; comma-separate a cluster's servers) or "
        "`amqp://user:pass@host:5672/` (RabbitMQ)."
    )
    prefix: str = Field(
        "ew",
        pattern=r"^[a-z][a-z0-9]{0,15}$",
        description="The bus prefix the security service uses (its `bus_prefix`).",
    )
    connect_timeout: Duration = Field(
        5.0,
        gt=0,
        description="A connection attempt slower than this fails; the gateway serves anyway (polling) "
        "and keeps trying.",
    )
    retry_interval: Duration = Field(
        10.0,
        gt=0,
        description="Longest pause between connection attempts while the broker cannot be reached "
        "(they start at 0.5 s and double).",
    )
    fallback_interval: Duration = Field(
        2.0,
        gt=0,
        description="Polling interval of `revocations.url` while the push is down, so a revoked token "
        "still stops working within seconds.",
    )

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return broker_setting(value)


class Revocations(StrictModel):
    """Where the gateway learns of revoked tokens: the security service's feed, and the event bus."""

    url: str = Field(
        description="The security service's `GET /revocations` feed, e.g. "
        "`http://security:8000/revocations`. Polled: the only source without `bus`; with it, the "
        "catch-up at start and after a broker outage."
    )
    interval: Duration | None = Field(
        None,
        gt=0,
        description="Polling interval of the feed. Default `2s`, or `60s` with `bus` (pushed "
        "revocations arrive at once; polling only catches up).",
    )
    bus: RevocationBus | None = Field(
        None, description="Also receive revocations pushed over the event bus, within milliseconds."
    )

    @field_validator("url")
    @classmethod
    def _feed_url(cls, value: str) -> str:
        return _http_url(value, "url")

    @property
    def poll_interval(self) -> float:
        """The interval while the push (if any) is up."""
        if self.interval is not None:
            return float(self.interval)
        return 60.0 if self.bus is not None else 2.0


class GatewayAuth(StrictModel):
    """How the gateway verifies tokens: JWKS, issuer, audience, algorithms, identity headers."""

    jwks_url: str = Field(
        description="The security service's JWKS, e.g. `http://security:8000/.well-known/jwks.json`; "
        "fetched at start (the gateway does not start without keys), refreshed periodically and "
        "on an unknown `kid`, served stale while the service is down."
    )
    issuer: str | list[str] = Field(description="Accepted `iss` value(s).")
    audience: str | list[str] = Field(description="Accepted `aud` value(s); a token needs one of them.")
    algorithms: list[str] = Field(
        default_factory=lambda: list(SAFE_ALGORITHMS),
        min_length=1,
        description="Signature algorithms accepted: `EdDSA`, `ES256`. `none` and HMAC (`HS*`) never are.",
    )
    leeway: Duration = Field(30.0, description="Clock skew allowed on `exp`, `nbf` and `iat`.")
    require_jti: bool = Field(True, description="Refuse tokens without `jti` (they could not be revoked).")
    token_types: list[str] | None = Field(
        default_factory=lambda: ["at+jwt"],
        min_length=1,
        description="Accepted values of the token header's `typ` (RFC 9068 access tokens: `at+jwt`, "
        "also written `application/at+jwt`); a token of another type, an ID token say, is refused. "
        "Add `JWT` for an identity provider whose access tokens carry that; `null`: not checked.",
    )
    jwks_refresh_interval: Duration = Field(300.0, gt=0, description="Scheduled JWKS refresh.")
    jwks_min_refresh_interval: Duration = Field(
        30.0, description="At most one refresh per this interval is caused by tokens with an unknown `kid`."
    )
    cache_size: int = Field(
        10_000, ge=0, description="Verified tokens remembered, so a repeated token skips the signature check."
    )
    cache_ttl: Duration | None = Field(
        None,
        gt=0,
        description="A cached verification is redone after this; `null`: kept until the token expires "
        "(expiry, revocation and the key still being trusted are checked on every request anyway).",
    )
    default_mode: AuthMode = Field(
        "none", description="Mode of routes without an `auth` block: `required`, `optional` or `none`."
    )
    realm: str = Field("edgeway", description="The `realm` of `WWW-Authenticate` challenges.")
    query_parameter: str = Field(
        "access_token",
        min_length=1,
        description="Query parameter read for a token on routes with `allow_query_token` (never elsewhere).",
    )
    revocations: Revocations | None = Field(
        None,
        description="The `jti` deny-list: polled from the security service, and pushed over the event "
        "bus when `bus` is set. `null`: no revocation checks.",
    )
    policy_url: str | None = Field(
        None, description="The security service's `GET /policies`, for routes with an ABAC `policy`."
    )
    policy_interval: Duration = Field(5.0, gt=0, description="Polling interval of the policy replica.")
    headers: IdentityHeaders = Field(
        default_factory=IdentityHeaders, description="Headers carrying the identity to services."
    )
    strip_header_prefixes: list[str] = Field(
        default_factory=list,
        description="More header name prefixes removed from every client request, besides the "
        "always-removed `X-User-` and `X-Edgeway-`.",
    )
    strip_headers: list[HeaderName] = Field(
        default_factory=list,
        description="More header names removed from every client request (the identity header names "
        "always are).",
    )
    pass_token: bool = Field(
        True, description="Forward the bearer token to services (they may verify it again)."
    )

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        return _http_url(value, "jwks_url")

    @field_validator("policy_url")
    @classmethod
    def _feed_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "the URL")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        # Renamed keys would otherwise only be "extra inputs are not permitted": say where they went.
        if isinstance(data, dict):
            moved = [(key, new) for key, new in _MOVED_KEYS.items() if key in data]
            if moved:
                raise LocatedProblemsError(
                    [((key,), f"moved: write 'revocations: {{{new}: ...}}' instead") for key, new in moved]
                )
        return data

    @field_validator("issuer", "audience")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, list) and not all(value)):
            raise PydanticCustomError("empty", "give at least one non-empty value")
        return value

    @field_validator("algorithms")
    @classmethod
    def _safe_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg not in SAFE_ALGORITHMS:
                raise PydanticCustomError(
                    "algorithm",
                    "algorithm '{alg}' is not allowed: edgeway verifies asymmetric signatures only "
                    "(EdDSA, ES256), never 'none' or HMAC",
                    {"alg": alg},
                )
        return list(dict.fromkeys(value))

    @field_validator("strip_header_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if TOKEN.fullmatch(prefix) is None:
                raise PydanticCustomError(
                    "header_name", "'{prefix}' is not a header name prefix", {"prefix": prefix}
                )
        return value

    @property
    def issuers(self) -> list[str]:
        return [self.issuer] if isinstance(self.issuer, str) else self.issuer

    @property
    def audiences(self) -> list[str]:
        return [self.audience] if isinstance(self.audience, str) else self.audience

    def stripped_prefixes(self) -> tuple[str, ...]:
        """Lower-cased header prefixes removed from every request."""
        return tuple(dict.fromkeys([*SPOOFABLE_PREFIXES, *(p.lower() for p in self.strip_header_prefixes)]))

    def stripped_names(self) -> frozenset[str]:
        """Lower-cased exact header names removed from every request."""
        return frozenset(n.lower() for n in [*self.headers.names(), *self.strip_headers])


class NameMatch(StrictModel):
    """Names a caller must hold: `any` of them or `all` of them (exactly one of the two)."""

    any: list[str] | None = Field(None, min_length=1, description="The caller needs at least one.")
    all: list[str] | None = Field(None, min_length=1, description="The caller needs every one.")

    @model_validator(mode="after")
    def _exactly_one(self) -> NameMatch:
        if (self.any is None) == (self.all is None):
            raise PydanticCustomError("name_match", "give exactly one of 'any' or 'all'")
        return self

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.any if self.any is not None else self.all or ())

    @property
    def needs_all(self) -> bool:
        return self.all is not None


class ClaimCondition(StrictModel):
    """One condition on a verified claim: `equals`, `in` or `exists` (exactly one)."""

    claim: str = Field(min_length=1, description="Claim name; dots walk into nested objects (`org.id`).")
    equals: Any = Field(None, description="The claim must equal this value.")
    in_: list[Any] | None = Field(None, alias="in", description="The claim must be one of these values.")
    exists: bool | None = Field(None, description="`true`: the claim must be present; `false`: absent.")

    @model_validator(mode="after")
    def _one_operator(self) -> ClaimCondition:
        given = [name for name in ("equals", "in_", "exists") if name in self.model_fields_set]
        if len(given) != 1:
            raise PydanticCustomError(
                "claim_condition", "a claim condition needs exactly one of 'equals', 'in' or 'exists'"
            )
        return self


class PolicyCheck(StrictModel):
    """An ABAC decision by the policy replica: the caller's claims are the subject attributes."""

    action: str = Field(
        min_length=1, description="Action asked for, e.g. `orders:read`; may use path parameters `{id}`."
    )
    resource: dict[str, str] = Field(
        default_factory=dict,
        description="Resource attributes, each a template over the path parameters, e.g. "
        "`{type: order, id: '{id}', owner: '{user}'}`.",
    )


class RouteAuth(StrictModel):
    """Who may call a route: `required | optional | none`, roles, scopes, claims, ABAC."""

    mode: AuthMode = Field(
        "required",
        description="`required`: a valid token is needed (401 otherwise); `optional`: a token is "
        "verified when sent, a request without one passes anonymously; `none`: no token is read.",
    )
    roles: list[str] | NameMatch | None = Field(
        None,
        description="Roles needed (403 otherwise): a list (any of them) or `{any: [...]}` / `{all: [...]}`.",
    )
    scopes: list[str] | NameMatch | None = Field(
        None,
        description="Scopes needed (403 otherwise): a list (any of them) or `{any: [...]}` / `{all: [...]}`.",
    )
    claims: list[ClaimCondition] = Field(
        default_factory=list,
        description="Conditions on verified claims, all of which must hold (403 otherwise).",
    )
    policy: PolicyCheck | None = Field(
        None, description="An ABAC check by the policy replica (needs `auth.policy_url` at the top level)."
    )
    allow_query_token: bool = Field(
        False,
        description="Also accept the token in the query parameter `auth.query_parameter` (for clients "
        "that cannot set headers, e.g. EventSource); it is removed from the forwarded query.",
    )

    @property
    def has_conditions(self) -> bool:
        return bool(self.roles or self.scopes or self.claims or self.policy)


def as_name_match(value: list[str] | NameMatch | None) -> NameMatch | None:
    """A plain list means "any of these"."""
    if isinstance(value, list):
        return NameMatch(any=value) if value else None
    return value


def auth_problems(auth: GatewayAuth | None, routes: Sequence[Route]) -> list[tuple[Loc, str]]:
    """Problems only visible with the whole config: each with its key path from the top."""
    problems: list[tuple[Loc, str]] = []
    for index, route in enumerate(routes):
        where: Loc = ("routes", index, "auth")
        rule = route.auth
        if rule is None:
            continue
        if auth is None:
            problems.append(
                (where, "a route with 'auth' needs the top-level 'auth' (jwks_url, issuer, audience)")
            )
            continue
        if rule.mode != "required" and rule.has_conditions:
            problems.append(
                (
                    (*where, "mode"),
                    f"roles, scopes, claims and policy need mode 'required' (this route says '{rule.mode}')",
                )
            )
        if rule.policy is not None:
            if auth.policy_url is None:
                problems.append(
                    ((*where, "policy"), "a policy check needs 'auth.policy_url' at the top level")
                )
            known = set(route.match.pattern.param_names)
            templates: list[tuple[Loc, str]] = [((*where, "policy", "action"), rule.policy.action)]
            templates += [((*where, "policy", "resource", k), v) for k, v in rule.policy.resource.items()]
            for loc, template in templates:
                for name in template_params(template):
                    if name not in known:
                        names = ", ".join(sorted(known)) or "none"
                        problems.append(
                            (
                                loc,
                                f"'{{{name}}}' is not a parameter of path {route.match.path!r} "
                                f"(it has: {names})",
                            )
                        )
    return problems
