"""Bearer authentication for the service's own protected endpoints (admin API, /authorize)."""

from __future__ import annotations

from fastapi import Request

from edgeway.security.errors import TokenRevoked
from edgeway.security.verify import Claims, bearer_token
from edgeway.security_service.problems import problem
from edgeway.security_service.state import state_of


async def caller(request: Request) -> Claims:
    """The verified claims of the request's bearer token (401 problem otherwise)."""
    state = state_of(request)
    claims = state.verifier.verify(bearer_token(request.headers.get("authorization")))
    # Another instance may have revoked it: the table is the truth for the service itself.
    if claims.jti is not None and await state.store.is_revoked(claims.jti):
        raise TokenRevoked()
    return claims


async def admin(request: Request) -> Claims:
    """A caller holding the admin role (403 problem otherwise)."""
    claims = await caller(request)
    role = state_of(request).settings.admin_role
    if role not in claims.roles:
        raise problem(403, "Forbidden", f"the admin API needs the {role!r} role", kind="forbidden")
    return claims
