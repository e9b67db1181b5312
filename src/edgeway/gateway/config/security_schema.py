"""Config of security at the edge: who may call a route (``auth``), how often (``rate_limit``),
from which origins (``cors``), with what body (``validate``), and the gateway-wide token
verification settings (``auth`` at the top level).

Owned by the edge-security work (issue 4); the fields grow here without touching ``schema.py``.
"""

from __future__ import annotations

from edgeway.gateway.config.base import StrictModel


class GatewayAuth(StrictModel):
    """How the gateway verifies tokens: JWKS, issuer, audience, algorithms, identity headers."""


class RouteAuth(StrictModel):
    """Who may call a route: `required | optional | none`, roles, scopes, claims, ABAC."""


class RateLimitStore(StrictModel):
    """Where rate-limit buckets live: this process's memory or a shared Redis."""


class RateLimitRule(StrictModel):
    """A token bucket per route, keyed by user, client id, API key or client address."""


class CorsRule(StrictModel):
    """Cross-origin resource sharing for browser clients."""


class RequestValidation(StrictModel):
    """Request body checks before forwarding: size and JSON schema."""
