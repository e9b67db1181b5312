"""Config of resilience at the edge: breakers, retries, outlier ejection, active health checks,
load shedding, service discovery and live reload.

Owned by the resilience and discovery work (issue 6); fields grow here without touching
``schema.py``.
"""

from __future__ import annotations

from edgeway.gateway.config.base import StrictModel


class BreakerRule(StrictModel):
    """Circuit breaker per service and per instance."""


class RetryRule(StrictModel):
    """Retries where safe, on another instance, within a retry budget."""


class OutlierRule(StrictModel):
    """Passive health: eject an instance that keeps failing, for a growing interval."""


class HealthCheckRule(StrictModel):
    """Active health: periodic HTTP checks per instance."""


class ConcurrencyRule(StrictModel):
    """Load shedding: a bound on concurrent requests; beyond it 503 with Retry-After."""


class DiscoveryRule(StrictModel):
    """Where a service's instances come from besides the static list: DNS, NATS KV, Consul."""


class ReloadSettings(StrictModel):
    """Live reload of this config: file watch, SIGHUP, admin API."""
