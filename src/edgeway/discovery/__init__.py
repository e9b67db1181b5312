"""Service discovery: where the instances of a service are, and how that set changes.

Shared by the gateway (clusters that follow their services) and the service kit (clients that
look a peer up before calling it). Nothing here knows about either.

======================  ========================================================================
module                  what it finds instances from
======================  ========================================================================
:mod:`.source`          the two shapes: :class:`Discovery` (resolve by name, once) and
                        :class:`InstanceSource` (one service, watched: yields each new set)
:mod:`.lookup`          a static map; a chain of lookups; a cache in front of one
:mod:`.dns`             DNS A/AAAA and SRV (Kubernetes headless services), re-resolved on TTL
:mod:`.registry`        the NATS KV registry services register in, with heartbeats and a TTL
:mod:`.consul`          Consul's catalog filtered by health, watched with blocking queries
:mod:`.natsconn`        a NATS connection that fails fast at start-up, then reconnects forever
======================  ========================================================================

Instances are base URLs, ``http://host:port``. Errors are in :mod:`.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeway.discovery.consul import ConsulSource
    from edgeway.discovery.dns import DnsDiscovery, DnsSource, make_resolver
    from edgeway.discovery.errors import DiscoveryError, RegistryError
    from edgeway.discovery.lookup import CachedDiscovery, ChainDiscovery, StaticDiscovery
    from edgeway.discovery.registry import (
        Instance,
        Registration,
        Registry,
        RegistryDiscovery,
        RegistrySource,
    )
    from edgeway.discovery.source import Discovery, InstanceSource, instance_url

# Names are imported on first use: the NATS client pulls in aiohttp (~150 ms) and a gateway
# that discovers nothing through NATS, or a service that does not register, should not pay it.
_HOMES = {
    "ConsulSource": "consul",
    "DnsDiscovery": "dns",
    "DnsSource": "dns",
    "make_resolver": "dns",
    "DiscoveryError": "errors",
    "RegistryError": "errors",
    "CachedDiscovery": "lookup",
    "ChainDiscovery": "lookup",
    "StaticDiscovery": "lookup",
    "Instance": "registry",
    "Registration": "registry",
    "Registry": "registry",
    "RegistryDiscovery": "registry",
    "RegistrySource": "registry",
    "Discovery": "source",
    "InstanceSource": "source",
    "instance_url": "source",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edgeway.discovery' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgeway.discovery.{home}"), name)


__all__ = [
    "CachedDiscovery",
    "ChainDiscovery",
    "ConsulSource",
    "Discovery",
    "DiscoveryError",
    "DnsDiscovery",
    "DnsSource",
    "Instance",
    "InstanceSource",
    "Registration",
    "Registry",
    "RegistryDiscovery",
    "RegistryError",
    "RegistrySource",
    "StaticDiscovery",
    "instance_url",
    "make_resolver",
]
