"""Errors raised by the service kit.

::

    ServiceKitError                   base of everything below
    ├── SettingsError                 settings file unreadable or invalid
    ├── ConfigUnavailableError        config store unreachable at start-up and no cached copy
    ├── IdentityError                 the caller could not be identified or is not allowed
    │   ├── AuthenticationError       401: no credentials, or a token that fails verification
    │   └── PermissionDeniedError     403: a verified caller without the role/scope needed
    ├── JwksUnavailableError          the JWKS could not be fetched (503: not the caller's fault)
    ├── DeadlineExceededError         the caller's deadline ran out during a call to a peer (504)
    └── PeerError                     a call to another service failed
        ├── PeerUnavailableError      every attempt failed (connect error, timeout, 502/503/504)
        ├── CircuitOpenError          every instance's breaker is open; nothing was sent
        └── PeerResponseError         the peer answered with an error status (typed calls, raise_for_status)

    DiscoveryError                    a service name could not be resolved (edgeway.discovery)
    ├── RegistryError                 the NATS KV service registry failed (edgeway.discovery)
    └── NoInstancesError              the name resolved, to no instance

Each maps to one RFC 9457 problem response in :mod:`edgeway.service.problems`. Errors from
third-party libraries (httpx for the JWKS, nats-py), from the HTTP engine under the clients and
from :mod:`edgeway.security` (token verification) are caught at the boundary and re-raised as
these, with the original as ``__cause__``.
"""

from __future__ import annotations

from edgeway.discovery.errors import DiscoveryError, RegistryError

__all__ = [
    "AuthenticationError",
    "CircuitOpenError",
    "ConfigUnavailableError",
    "DeadlineExceededError",
    "DiscoveryError",
    "IdentityError",
    "JwksUnavailableError",
    "NoInstancesError",
    "PeerError",
    "PeerResponseError",
    "PeerUnavailableError",
    "PermissionDeniedError",
    "RegistryError",
    "ServiceKitError",
    "SettingsError",
]


class ServiceKitError(Exception):
    """Base class of the service kit's errors."""


class SettingsError(ServiceKitError):
    pass


class ConfigUnavailableError(ServiceKitError):
    pass


class IdentityError(ServiceKitError):
    status = 401


class AuthenticationError(IdentityError):
    """401. ``reason`` is a short machine code (``missing``, ``expired``, ``bad_signature``...), the
    same codes the gateway and :mod:`edgeway.security` use."""

    status = 401

    def __init__(self, message: str, reason: str = "invalid_token") -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDeniedError(IdentityError):
    status = 403


class JwksUnavailableError(ServiceKitError):
    pass


class DeadlineExceededError(ServiceKitError):
    """504: the request's deadline (``X-Edgeway-Deadline-Ms``) left no time for a call to
    ``service``, or ran out during it; nothing more is tried, since nobody waits for the answer."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class NoInstancesError(DiscoveryError):
    def __init__(self, service: str, sources: str) -> None:
        super().__init__(
            service,
            f"no instance of service {service!r} found (looked in: {sources}); is it running and "
            f"registered, or set EDGEWAY_SERVICE_{env_name(service)}_URLS",
        )


class PeerError(ServiceKitError):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class PeerUnavailableError(PeerError):
    pass


class PeerResponseError(PeerError):
    def __init__(self, service: str, status: int, body: str) -> None:
        super().__init__(service, f"{service} answered {status}: {body[:200]}")
        self.status = status
        self.body = body


class CircuitOpenError(PeerError):
    def __init__(self, service: str, retry_after: float) -> None:
        super().__init__(
            service,
            f"circuit open for every instance of {service!r}; next probe in {retry_after:.1f}s",
        )
        self.retry_after = retry_after


def env_name(service: str) -> str:
    """The service name as it appears in environment variable names: ``order-api`` → ``ORDER_API``."""
    return "".join(c if c.isalnum() else "_" for c in service).upper()
