"""The extras a gateway config needs beyond the base install, checked when the config is loaded.

A gateway installed as ``pip install edgeway`` runs every feature that needs no other system;
a config that uses Redis or a broker needs that client's extra. :func:`missing_extras` lists
each such setting whose extra is not installed, with its key path, so ``edgeway config check``,
``edgeway gateway`` and a live reload refuse the config at load with
``pip install 'edgeway[redis]'`` instead of failing when the feature first runs.
"""

from __future__ import annotations

from edgeway.bus.brokers import broker_extra
from edgeway.extras import MissingExtraError, missing
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.schema import GatewayConfig

__all__ = ["missing_extras", "needed_extras"]


def needed_extras(config: GatewayConfig) -> list[tuple[Loc, str, str]]:
    """Every setting of ``config`` that needs an extra: (key path, extra, what it is)."""
    needs: list[tuple[Loc, str, str]] = []
    auth = config.auth
    if auth is not None and auth.revocations is not None and auth.revocations.bus is not None:
        extra = broker_extra(auth.revocations.bus.url)
        needs.append((("auth", "revocations", "bus", "url"), extra, "revocation push"))
    if config.rate_limits.backend == "redis":
        needs.append((("rate_limits", "backend"), "redis", "the redis rate-limit backend"))
    if config.cache.redis is not None:
        needs.append((("cache", "redis"), "redis", "the shared (redis) cache"))
    if config.push is not None and config.push.bus is not None:
        extra = "nats" if config.push.bus.transport == "nats" else "rabbitmq"
        needs.append((("push", "bus", "transport"), extra, "push from the event bus"))
    if config.telemetry.tracing.enabled:
        needs.append((("telemetry", "tracing", "enabled"), "tracing", "OpenTelemetry tracing"))
    for name, service in config.services.items():
        if service.discovery is not None and service.discovery.nats_kv is not None:
            needs.append((("services", name, "discovery", "nats_kv"), "nats", "NATS KV discovery"))
    return needs


def missing_extras(config: GatewayConfig) -> list[tuple[Loc, str]]:
    """(key path, message) for each setting whose extra is not installed; empty when all are."""
    problems: list[tuple[Loc, str]] = []
    for loc, extra, feature in needed_extras(config):
        module = missing(extra)
        if module is not None:
            problems.append((loc, str(MissingExtraError(feature, extra, module))))
    return problems
