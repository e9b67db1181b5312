"""Errors raised by discovery.

::

    DiscoveryError      a service's instances could not be found (DNS timeout, registry or
    │                   Consul unreachable, an answer that makes no sense); ``service`` names it
    └── RegistryError   the NATS KV service registry failed (open, register, look up)

An empty answer is not an error: a service scaled to zero has no instances. Errors from
dnspython, nats-py and httpx are caught at the boundary and re-raised as these, with the original
as ``__cause__``. The service kit re-exports both from :mod:`edgeway.service.errors`.
"""

from __future__ import annotations

__all__ = ["DiscoveryError", "RegistryError"]


class DiscoveryError(Exception):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class RegistryError(DiscoveryError):
    def __init__(self, message: str, service: str = "") -> None:
        super().__init__(service, message)
