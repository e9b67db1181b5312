"""OAuth 2.0 endpoints: ``POST /oauth/token`` (password, client_credentials, refresh_token) and
``POST /oauth/revoke`` (RFC 7009; logout).

Refresh tokens rotate: each use returns a new one in the same *family* and spends the old one.
Presenting a spent token again means it was copied, so the whole family is revoked (every
refresh token and every live access token it produced): the thief and the user are both logged
out, and the user logs in again.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from edgeway.security.errors import TokenError
from edgeway.security.tokens import (
    REFRESH_PREFIX,
    REGISTERED_CLAIMS,
    IssuedToken,
    hash_refresh_token,
    new_refresh_token,
)
from edgeway.security.verify import MAX_TOKEN_BYTES
from edgeway.security_service import db
from edgeway.security_service.problems import oauth_error
from edgeway.security_service.state import SecurityState, state_of
from edgeway.security_service.throttle import LoginThrottle
from edgeway.service.openapi import problem_responses

router = APIRouter()

GRANT_TYPES = ("password", "client_credentials", "refresh_token")
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: Request) -> dict[str, str]:
    """The request's parameters, form-encoded (RFC 6749) or JSON; repeated parameters refused."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise oauth_error(400, "invalid_request", f"request body larger than {MAX_FORM_BYTES} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise oauth_error(400, "invalid_request", f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise oauth_error(400, "invalid_request", "body must be a JSON object")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise oauth_error(400, "invalid_request", f"body is not form-encoded: {exc}") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise oauth_error(400, "invalid_request", f"parameter {key!r} is repeated")
        form[key] = value
    return form


def client_ip(request: Request, state: SecurityState) -> str:
    if state.settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            # The last entry is the one the trusted proxy (the gateway) added; entries to its
            # left are whatever the client sent, so an attacker could rotate them at will.
            return forwarded.rsplit(",", 1)[-1].strip()
    return request.client.host if request.client else "unknown"


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise oauth_error(400, "invalid_request", "malformed Basic credentials") from exc
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def authenticate_client(
    request: Request, form: dict[str, str], state: SecurityState, throttle: LoginThrottle, ip: str
) -> dict[str, Any] | None:
    """The authenticated client, None when no client was named. Secrets are checked and throttled."""
    basic = _basic_credentials(request)
    if basic is not None and ("client_secret" in form or form.get("client_id", basic[0]) != basic[0]):
        raise oauth_error(
            400, "invalid_request", "send client credentials one way, not in both header and body"
        )
    client_id, secret = basic if basic is not None else (form.get("client_id"), form.get("client_secret"))
    if not client_id:
        return None
    key = f"client:{client_id}"
    await throttle.check([key, f"ip:{ip}"])
    client = await state.store.get(db.clients, client_id)
    invalid = oauth_error(
        401, "invalid_client", "unknown client or wrong secret", {"WWW-Authenticate": 'Basic realm="edgeway"'}
    )
    if client is None:
        await state.passwords.verify(None, secret or "")  # same cost as a real check
        await throttle.failed(key, f"ip:{ip}")
        raise invalid
    if client["secret_hash"] is not None:
        if not secret or not await state.passwords.verify(client["secret_hash"], secret):
            await throttle.failed(key, f"ip:{ip}")
            raise invalid
        await throttle.succeeded(key)
    elif secret:
        raise oauth_error(400, "invalid_request", f"client {client_id} is public and has no secret")
    return client


async def _granted_scopes(state: SecurityState, form: dict[str, str], allowed: list[str] | None) -> list[str]:
    requested = form.get("scope", "").split()
    if allowed is None:
        allowed = [row["name"] for row in await state.store.rows(db.scopes)]
    if not requested:
        return list(allowed) if form.get("grant_type") == "client_credentials" else []
    unknown = [s for s in requested if s not in allowed]
    if unknown:
        raise oauth_error(400, "invalid_scope", f"scope not allowed: {' '.join(unknown)}")
    return requested


def _custom_claims(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in attributes.items() if k not in REGISTERED_CLAIMS and k not in ("client_id", "sid")
    }


def _access_token(
    state: SecurityState,
    *,
    subject: str,
    scopes: list[str],
    roles: list[str],
    attributes: dict[str, Any],
    client_id: str | None,
    family_id: str | None,
) -> IssuedToken:
    """The signed access token; refused before anything is stored when no verifier would accept it."""
    claims = _custom_claims(attributes)
    if client_id is not None:
        claims["client_id"] = client_id
    if family_id is not None:
        claims["sid"] = family_id
    access = state.issuer.issue(subject, scope=scopes, roles=roles, claims=claims)
    if len(access.token) > MAX_TOKEN_BYTES:
        raise oauth_error(
            400,
            "invalid_grant",
            f"the access token for {subject} would be {len(access.token)} bytes, more than the "
            f"{MAX_TOKEN_BYTES} every verifier accepts; an administrator must shrink the account's "
            "attributes or roles",
        )
    return access


async def _issue(
    state: SecurityState,
    *,
    subject: str,
    scopes: list[str],
    roles: list[str],
    attributes: dict[str, Any],
    client_id: str | None,
    family_id: str | None,
    with_refresh: bool,
    access: IssuedToken | None = None,
) -> JSONResponse:
    if with_refresh:
        family_id = family_id or secrets.token_hex(16)
    if access is None:
        access = _access_token(
            state,
            subject=subject,
            scopes=scopes,
            roles=roles,
            attributes=attributes,
            client_id=client_id,
            family_id=family_id if with_refresh else None,
        )
    body: dict[str, Any] = {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": int(state.issuer.ttl),
        "scope": " ".join(scopes),
    }
    if with_refresh and family_id is not None:
        refresh = new_refresh_token()
        now = time.time()
        await state.store.add_refresh_token(
            {
                "token_hash": refresh.digest,
                "family_id": family_id,
                "subject": subject,
                "client_id": client_id,
                "scope": " ".join(scopes),
                "created_at": now,
                "expires_at": now + state.settings.refresh_token_ttl,
                "used_at": None,
                "revoked": False,
                "access_jti": access.jti,
                "access_exp": float(access.expires_at),
            }
        )
        body["refresh_token"] = refresh.value
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/oauth/token", responses=problem_responses(400, 401, 423, 429))
async def token(request: Request) -> JSONResponse:
    state = state_of(request)
    form = await read_form(request)
    grant = form.get("grant_type")
    if grant not in GRANT_TYPES:
        raise oauth_error(
            400, "unsupported_grant_type", f"grant_type must be one of {', '.join(GRANT_TYPES)}"
        )
    throttle = LoginThrottle(state.store, state.settings)
    ip = client_ip(request, state)
    client = await authenticate_client(request, form, state, throttle, ip)
    if client is not None and grant not in client["grant_types"]:
        raise oauth_error(400, "unauthorized_client", f"client {client['client_id']} may not use {grant}")
    if grant == "password":
        return await _password_grant(state, form, client, throttle, ip)
    if grant == "client_credentials":
        if client is None or client["secret_hash"] is None:
            raise oauth_error(
                401,
                "invalid_client",
                "client_credentials needs a confidential client",
                {"WWW-Authenticate": "Basic"},
            )
        return await _issue(
            state,
            subject=client["client_id"],
            scopes=await _granted_scopes(state, form, list(client["scopes"])),
            roles=list(client["roles"]),
            attributes=dict(client["attributes"]),
            client_id=client["client_id"],
            family_id=None,
            with_refresh=False,
        )
    return await _refresh_grant(state, form, client)


async def _password_grant(
    state: SecurityState,
    form: dict[str, str],
    client: dict[str, Any] | None,
    throttle: LoginThrottle,
    ip: str,
) -> JSONResponse:
    username, password = form.get("username"), form.get("password")
    if not username or password is None:
        raise oauth_error(400, "invalid_request", "the password grant needs username and password")
    account_key, ip_key = f"user:{username}", f"ip:{ip}"
    await throttle.check([account_key, ip_key])
    user = await state.store.get(db.users, username)
    if not await state.passwords.verify(user["password_hash"] if user else None, password) or user is None:
        locked = await throttle.failed(account_key, ip_key)
        detail = "wrong username or password" + ("; the account is now locked" if locked else "")
        raise oauth_error(400, "invalid_grant", detail)
    await throttle.succeeded(account_key)
    if user["disabled"]:
        raise oauth_error(400, "invalid_grant", "this account is disabled")
    if state.passwords.needs_rehash(user["password_hash"]):
        await state.store.change(
            "system", "update", db.users, username, {"password_hash": await state.passwords.hash(password)}
        )
    allowed = list(client["scopes"]) if client is not None else None
    return await _issue(
        state,
        subject=username,
        scopes=await _granted_scopes(state, form, allowed),
        roles=list(user["roles"]),
        attributes=dict(user["attributes"]),
        client_id=client["client_id"] if client else None,
        family_id=None,
        with_refresh=True,
    )


async def _refresh_grant(
    state: SecurityState, form: dict[str, str], client: dict[str, Any] | None
) -> JSONResponse:
    value = form.get("refresh_token")
    if not value:
        raise oauth_error(400, "invalid_request", "the refresh_token grant needs refresh_token")
    row = await state.store.find_refresh_token(hash_refresh_token(value))
    now = time.time()
    if row is None or row["revoked"] or row["expires_at"] < now:
        raise oauth_error(400, "invalid_grant", "refresh token is unknown, expired or revoked")
    if row["client_id"] is not None and (client is None or client["client_id"] != row["client_id"]):
        raise oauth_error(400, "invalid_grant", "refresh token was issued to another client")
    # Checked before the token is spent, so a bad request does not burn it.
    granted = row["scope"].split()
    requested = form.get("scope")
    if requested is not None:
        narrower = requested.split()
        if not set(narrower) <= set(granted):
            raise oauth_error(400, "invalid_scope", "a refresh may only narrow the scope")
        granted = narrower
    user = await state.store.get(db.users, row["subject"])
    if user is None or user["disabled"]:
        await _revoke_family(state, row["family_id"], "account_disabled", now)
        raise oauth_error(400, "invalid_grant", "the account no longer exists or is disabled")
    # Signed before the refresh token is spent: a token that cannot be issued must not burn it.
    access = _access_token(
        state,
        subject=row["subject"],
        scopes=granted,
        roles=list(user["roles"]),  # current roles: a role removed since login is gone now
        attributes=dict(user["attributes"]),
        client_id=row["client_id"],
        family_id=row["family_id"],
    )
    if not await state.store.claim_refresh_token(row["token_hash"], now):
        await _revoke_family(state, row["family_id"], "refresh_reuse", now)
        await state.store.audit(
            "system",
            "refresh.reuse_detected",
            f"user:{row['subject']}",
            None,
            {"family_id": row["family_id"]},
        )
        raise oauth_error(400, "invalid_grant", "refresh token reuse detected; the whole session was revoked")
    return await _issue(
        state,
        subject=row["subject"],
        scopes=granted,
        roles=list(user["roles"]),
        attributes=dict(user["attributes"]),
        client_id=row["client_id"],
        family_id=row["family_id"],
        with_refresh=True,
        access=access,
    )


async def _revoke_family(state: SecurityState, family_id: str, reason: str, now: float) -> None:
    await state.revoke_family(family_id, reason, now)


@router.post(
    "/oauth/revoke",
    response_class=Response,
    responses={200: {"description": "Revoked, or unknown (no body)"}, **problem_responses(400)},
)
async def revoke(request: Request) -> Response:
    """RFC 7009. Answers 200 for unknown tokens too, so it cannot be used to probe them."""
    state = state_of(request)
    form = await read_form(request)
    tokens = [form["token"]] if form.get("token") else []
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        tokens.append(header[7:].strip())
    if not tokens:
        raise oauth_error(400, "invalid_request", "send the token to revoke in 'token' or as a Bearer header")
    now = time.time()
    actor = "anonymous"
    for value in tokens:
        if value.startswith(REFRESH_PREFIX):
            row = await state.store.find_refresh_token(hash_refresh_token(value))
            if row is not None:
                actor = row["subject"]
                await _revoke_family(state, row["family_id"], "logout", now)
            continue
        try:
            claims = state.verifier.verify(value)
        except TokenError:
            continue
        actor = claims.sub
        if claims.jti is not None:
            await state.revoke_jti(claims.jti, claims.exp, "logout", now)
        sid = claims.raw.get("sid")
        if isinstance(sid, str):
            await _revoke_family(state, sid, "logout", now)
    await state.store.audit(actor, "token.revoke", f"user:{actor}")
    return Response(status_code=200, headers=_NO_STORE)


__all__ = ["router"]
