"""Errors of the resilience layer.

    ResilienceError          base of everything raised by edgeway.resilience
    ├── NoInstanceAvailable  every instance of a service is out of the balancer (open breaker,
    │                        ejected, failing its health check, or none known); nothing was sent
    └── Overloaded           a concurrency bound is reached and the request may not wait;
                             ``retry_after`` is the hint to give the client (seconds)

Callers map them to their own answers at the boundary (the gateway: 503 problem+json with
``Retry-After``).
"""

from __future__ import annotations


class ResilienceError(Exception):
    """Base of the resilience layer's errors."""


class NoInstanceAvailable(ResilienceError, LookupError):
    """Every instance of the service is out of the balancer (ejected, unhealthy or none known)."""


class Overloaded(ResilienceError):
    """More concurrent requests than the bound allows, and no room (or time) to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
