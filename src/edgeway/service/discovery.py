"""Finding the instances of a service by name, for the service kit's clients.

Sources, each a :class:`~edgeway.discovery.Discovery` (``async resolve(service) -> list of base
URLs``); all but the environment one live in :mod:`edgeway.discovery`, shared with the gateway:

- :class:`StaticDiscovery` — a mapping from settings (``EDGEWAY_SERVICES='{"orders": [...]}'``);
- :class:`EnvDiscovery` — ``EDGEWAY_SERVICE_<NAME>_URLS=http://a:8000,http://b:8000`` (the name
  upper-cased, other characters as ``_``);
- :class:`DnsDiscovery` — DNS SRV ``_http._tcp.<name>`` (host and port per instance, as
  Kubernetes headless services publish them), falling back to A/AAAA records on a default port;
- :class:`RegistryDiscovery` — the NATS KV :class:`~edgeway.discovery.registry.Registry`.

:class:`ChainDiscovery` asks them in order and returns the first non-empty answer;
:class:`CachedDiscovery` keeps answers for a few seconds so a busy client does not resolve on
every call, and keeps serving the last answer (up to ``discovery_max_stale`` seconds) while
discovery fails. An empty answer is not an error here; the client raises
:class:`~edgeway.service.errors.NoInstancesError` naming the sources it tried. A lookup that
failed with nothing known raises :class:`~edgeway.discovery.errors.DiscoveryError` instead: "the
registry could not be asked" is not "the registry says there are none".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeway.discovery.lookup import CachedDiscovery, ChainDiscovery, StaticDiscovery
from edgeway.discovery.registry import RegistryDiscovery
from edgeway.discovery.source import Discovery
from edgeway.service.errors import env_name

if TYPE_CHECKING:
    from edgeway.discovery.dns import DnsDiscovery

__all__ = [
    "CachedDiscovery",
    "ChainDiscovery",
    "Discovery",
    "DnsDiscovery",
    "EnvDiscovery",
    "RegistryDiscovery",
    "StaticDiscovery",
]


class EnvDiscovery:
    """``EDGEWAY_SERVICE_<NAME>_<suffix>``: ``URLS`` for HTTP, ``GRPC_URLS`` for the gRPC client."""

    name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None, *, suffix: str = "URLS") -> None:
        self._environ = environ
        self._suffix = suffix

    async def resolve(self, service: str) -> list[str]:
        env = os.environ if self._environ is None else self._environ
        raw = env.get(f"EDGEWAY_SERVICE_{env_name(service)}_{self._suffix}", "")
        return [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]


def __getattr__(name: str) -> Any:
    # DnsDiscovery on first use: dnspython costs ~25 ms of CPU at each start, and only a service
    # with dns_discovery asks DNS.
    if name == "DnsDiscovery":
        from edgeway.discovery.dns import DnsDiscovery

        return DnsDiscovery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
