"""Read endpoints for gateways and services: discovery, JWKS, revocations, policies, decisions."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from edgeway.security.errors import TokenError
from edgeway.security.verify import Claims
from edgeway.security_service import db
from edgeway.security_service.auth import caller
from edgeway.security_service.oauth import GRANT_TYPES
from edgeway.security_service.problems import problem
from edgeway.security_service.state import state_of
from edgeway.service.models import Count

router = APIRouter()


def base_url(request: Request) -> str:
    configured = state_of(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    state = state_of(request)
    state.prune_keys()
    # Short max-age: verifiers also refetch on an unknown kid, so rotation never waits for it.
    return JSONResponse(state.ring.jwks(), headers={"Cache-Control": "public, max-age=60"})


@router.get("/.well-known/openid-configuration")
async def openid_configuration(request: Request) -> dict[str, Any]:
    state = state_of(request)
    base = base_url(request)
    scopes = [row["name"] for row in await state.store.rows(db.scopes)]
    return {
        "issuer": state.settings.issuer,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": scopes,
        # Not OpenID Connect proper (no id tokens): the document is how clients find the endpoints.
        "access_token_signing_alg_values_supported": [state.settings.signing_alg],
    }


@router.get("/revocations")
async def revocations(
    request: Request,
    since: Annotated[
        Count, Query(description="the cursor of the previous page (sequence numbers are 32-bit)")
    ] = 0,
) -> dict[str, Any]:
    state = state_of(request)
    entries, cursor = await state.store.revocations_since(
        since, time.time(), state.settings.revocation_page_size
    )
    return {"entries": entries, "cursor": cursor}


@router.get("/policies")
async def policies(request: Request) -> Response:
    state = state_of(request)
    current = await state.policies()
    etag = f'"{current.version}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(current.to_document(), headers={"ETag": etag, "Cache-Control": "no-cache"})


class AuthorizeRequest(BaseModel):
    action: str = Field(min_length=1)
    resource: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    token: str | None = Field(None, description="Decide for this token's subject instead of the caller's.")


@router.post("/authorize")
async def authorize(
    request: Request, body: AuthorizeRequest, claims: Claims = Depends(caller)
) -> dict[str, Any]:
    state = state_of(request)
    subject = claims
    if body.token is not None:
        try:
            subject = state.verifier.verify(body.token)
        except TokenError as exc:
            raise problem(
                422, "Invalid Subject Token", str(exc), kind="invalid-subject-token", reason=exc.reason
            ) from exc
    current = await state.policies()
    decision = current.decide(subject.attributes(), body.action, body.resource, body.context)
    return {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policy_id": decision.policy_id,
        "version": current.version,
        "subject": subject.sub,
    }


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {"status": "ok", "active_kid": state.ring.active.kid, "keys": len(state.ring.keys)}
