"""Authentication at the edge: the ``auth`` filter of a route.

When the gateway has ``auth`` configured, every route gets this filter, because spoofable identity
headers are removed from every request, ``auth: none`` routes included. What else it does depends
on the route's mode (its ``auth.mode``, else the gateway's ``auth.default_mode``):

- ``none``: strip the spoofable headers, nothing more;
- ``optional``: a request without a token passes anonymously; a token that is sent must be valid;
- ``required``: a valid token is needed, then the route's roles, scopes, claim conditions and
  ABAC policy must allow the request.

A missing or bad token is a 401 with an RFC 6750 ``WWW-Authenticate: Bearer`` challenge, a denied
request a 403; both are problem+json with a machine ``reason``. The verified caller goes into
``ctx.identity`` and, as headers, to the service (see :mod:`edgeway.gateway.filters.auth.identity_headers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, GatewayEnv, RequestContext, Verdict
from edgeway.gateway.filters.auth.config import (
    TEMPLATE_PARAM,
    ClaimCondition,
    GatewayAuth,
    NameMatch,
    RouteAuth,
    as_name_match,
    template_params,
)
from edgeway.gateway.filters.auth.identity_headers import HeaderScrubber

if TYPE_CHECKING:
    from edgeway.gateway.filters.auth.tokens import EdgeAuth, Verified
    from edgeway.http.exchange import Exchange, Headers
    from edgeway.security.policy import PolicyReplica

_AUTHORIZATION = b"authorization"
_MISSING = object()

Check = Callable[["Verified", RequestContext], None]  # raises a 403 Rejection when it fails


class StripHeaders:
    """``auth: none`` on a gateway with ``auth``: the spoofable identity headers go, nothing more."""

    __slots__ = ("scrub",)

    def __init__(self, scrub: HeaderScrubber) -> None:
        self.scrub = scrub

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        ex.headers = self.scrub(ex.headers)
        return ADMIT


def build_auth(route: Route, env: GatewayEnv) -> StripHeaders | AuthFilter | None:
    gateway_auth = env.config.auth
    if gateway_auth is None:
        return None  # a route `auth` without the top-level one is refused by config validation
    rule = route.auth or RouteAuth(mode=gateway_auth.default_mode)
    if rule.mode == "none":
        return StripHeaders(HeaderScrubber.for_gateway(gateway_auth))
    # Imported when a route authenticates: the security library (httpx, cryptography) costs
    # ~0.2 s at start, which gateways without auth need not pay.
    from edgeway.gateway.filters.auth.tokens import EdgeAuth

    auth = env.shared("auth", lambda: EdgeAuth(gateway_auth, env.metrics))
    return AuthFilter(rule, route, gateway_auth, auth)


class AuthFilter:
    """A route that authenticates. It decides at once when the token's key is known; a token
    signed by a key not fetched yet waits for the key set in a task."""

    def __init__(self, rule: RouteAuth, route: Route, config: GatewayAuth, auth: EdgeAuth) -> None:
        from edgeway.security.errors import TokenError, TokenUnknownKey

        self._token_error = TokenError
        self._unknown_key = TokenUnknownKey
        self.auth = auth
        # The token is read before the scrub; without pass_token it is then removed with the rest.
        self.scrub = HeaderScrubber.for_gateway(config, *(() if config.pass_token else ("authorization",)))
        self.challenge = Challenges(config.realm)
        self.checks = compile_checks(rule, route, auth.policies, self.challenge)
        self.required = rule.mode == "required"
        self.query_param = config.query_parameter.encode() + b"="
        self.allow_query = rule.allow_query_token
        self.pass_token = config.pass_token

    def bearer_header(self, ex: Exchange) -> bytes | None:
        """The Authorization header's Bearer token; a 401 for another scheme when required."""
        authorization = ex.header(_AUTHORIZATION)
        if authorization is None:
            return None
        scheme, _, value = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            return value.strip()
        if self.required:
            raise self.challenge.unauthorized(
                "missing", "the Authorization header is not a Bearer token", error=False
            )
        return None

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        challenge = self.challenge
        token = self.bearer_header(ex)
        from_query = False
        if token is None and ex.query and self.query_param in ex.query:
            if not self.allow_query:
                if self.required:
                    raise challenge.unauthorized(
                        "query_token_refused",
                        "tokens in the query string are not accepted on this route; "
                        "send 'Authorization: Bearer <token>'",
                        error=False,
                    )
            else:
                token, ex.query = take_query_param(ex.query, self.query_param)
                from_query = token is not None
        headers = self.scrub(ex.headers)
        if token is None:
            if self.required:
                raise challenge.unauthorized("missing", "this route needs a bearer token", error=False)
            ex.headers = headers
            return ADMIT
        try:
            verified = self.auth.verify(token)
        except self._unknown_key:
            return self._verify_later(ctx, token, headers, from_query)
        except self._token_error as exc:
            raise challenge.unauthorized(exc.reason, str(exc)) from None
        self._admit(ctx, verified, token, headers, from_query)
        return ADMIT

    async def _verify_later(
        self, ctx: RequestContext, token: bytes, headers: Headers, from_query: bool
    ) -> None:
        """A key id the gateway has not fetched yet: the key set is fetched (once, for every
        request that waits on it), then the same checks."""
        try:
            verified = await self.auth.verify_async(token)
        except self._token_error as exc:
            raise self.challenge.unauthorized(exc.reason, str(exc)) from None
        self._admit(ctx, verified, token, headers, from_query)

    def _admit(
        self, ctx: RequestContext, verified: Verified, token: bytes, headers: Headers, from_query: bool
    ) -> None:
        for check in self.checks:
            check(verified, ctx)
        ctx.identity = verified.identity
        headers.extend(verified.headers)  # the exchange owns its header list: extending is safe
        if from_query and self.pass_token:
            headers.append((_AUTHORIZATION, b"Bearer " + token))
        ctx.ex.headers = headers


def take_query_param(query: bytes, prefix: bytes) -> tuple[bytes | None, bytes]:
    """The (percent-decoded) value of the first ``name=`` parameter, and the query without it."""
    value: bytes | None = None
    kept: list[bytes] = []
    for part in query.split(b"&"):
        if value is None and part.startswith(prefix):
            value = unquote_to_bytes(part[len(prefix) :]) or None
        else:
            kept.append(part)
    return value, b"&".join(kept)


class Challenges:
    """The 401 and 403 answers of one gateway realm (RFC 6750 section 3)."""

    def __init__(self, realm: str) -> None:
        self.realm = _quoted(realm)

    def unauthorized(self, reason: str, detail: str, *, error: bool = True) -> Rejection:
        # RFC 6750 3.1: a request without credentials gets no error code, a bad token gets
        # invalid_token with a description.
        value = f'Bearer realm="{self.realm}"'
        if error:
            value += f', error="invalid_token", error_description="{_quoted(detail)}"'
        return Rejection(
            401, "Unauthorized", detail, headers=[(b"www-authenticate", value.encode())], reason=reason
        )

    def forbidden(self, reason: str, detail: str, scopes: frozenset[str] | None = None) -> Rejection:
        headers: list[tuple[bytes, bytes]] = []
        if scopes is not None:
            value = (
                f'Bearer realm="{self.realm}", error="insufficient_scope", scope="{" ".join(sorted(scopes))}"'
            )
            headers.append((b"www-authenticate", value.encode()))
        return Rejection(403, "Forbidden", detail, headers=headers, reason=reason)


def _quoted(text: str) -> str:
    """Safe inside a quoted-string: no quotes, backslashes or control characters."""
    return "".join(ch for ch in text if ch not in '"\\' and 0x20 <= ord(ch) < 0x7F)


# --------------------------------------------------------------------------- route conditions


def compile_checks(
    rule: RouteAuth, route: Route, policies: PolicyReplica | None, challenge: Challenges
) -> list[Check]:
    """The route's conditions as closures, cheapest first."""
    checks: list[Check] = []
    roles = as_name_match(rule.roles)
    if roles is not None:
        checks.append(_names_check(roles, "roles", "role", challenge))
    scopes = as_name_match(rule.scopes)
    if scopes is not None:
        checks.append(_names_check(scopes, "scopes", "scope", challenge))
    checks.extend(_claim_check(condition, challenge) for condition in rule.claims)
    if rule.policy is not None:
        if policies is None:  # config validation requires policy_url; kept for the type checker
            raise ValueError(f"route {route.id!r}: a policy check needs auth.policy_url")
        checks.append(_policy_check(rule, route, policies, challenge))
    return checks


def _names_check(match: NameMatch, attribute: str, noun: str, challenge: Challenges) -> Check:
    needed = match.names
    needs_all = match.needs_all
    is_scope = attribute == "scopes"

    def check(verified: Verified, ctx: RequestContext) -> None:
        held: frozenset[str] = getattr(verified.identity, attribute)
        if needs_all:
            missing = needed - held
            if not missing:
                return
            detail = f"missing {noun}(s): {', '.join(sorted(missing))}"
        else:
            if not needed.isdisjoint(held):
                return
            detail = f"needs one of the {noun}s: {', '.join(sorted(needed))}"
        raise challenge.forbidden(f"insufficient_{noun}", detail, needed if is_scope else None)

    return check


def claim_value(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path, or ``_MISSING``."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    # JSON says true is not 1; Python says it is.
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def _claim_check(condition: ClaimCondition, challenge: Challenges) -> Check:
    path = condition.claim
    if "exists" in condition.model_fields_set:
        wanted = bool(condition.exists)

        def test(value: Any) -> bool:
            return (value is not _MISSING) == wanted

        describe = "must be present" if wanted else "must be absent"
    elif "in_" in condition.model_fields_set:
        options = list(condition.in_ or [])

        def test(value: Any) -> bool:
            return value is not _MISSING and any(_same(value, option) for option in options)

        describe = f"must be one of {options!r}"
    else:
        expected = condition.equals

        def test(value: Any) -> bool:
            return value is not _MISSING and _same(value, expected)

        describe = f"must equal {expected!r}"

    def check(verified: Verified, ctx: RequestContext) -> None:
        if not test(claim_value(verified.claims.raw, path)):
            raise challenge.forbidden("claim_mismatch", f"claim {path!r} {describe}")

    return check


def _render(template: str) -> Callable[[Mapping[str, str]], str]:
    if not template_params(template):
        return lambda params: template
    return lambda params: TEMPLATE_PARAM.sub(lambda found: params[found.group(1)], template)


def _policy_check(rule: RouteAuth, route: Route, policies: PolicyReplica, challenge: Challenges) -> Check:
    assert rule.policy is not None
    action = _render(rule.policy.action)
    resource = [(key, _render(value)) for key, value in rule.policy.resource.items()]
    route_id = route.id

    def check(verified: Verified, ctx: RequestContext) -> None:
        params = ctx.match.params
        ex = ctx.ex
        context = {
            "method": ex.method.decode(),
            "path": ctx.match.path,
            "client_ip": ex.client,
            "route": route_id,
        }
        decision = policies.decide(
            verified.attributes, action(params), {key: render(params) for key, render in resource}, context
        )
        if not decision.allowed:
            raise challenge.forbidden("policy_denied", decision.reason)

    return check
