"""The admin API's traffic endpoints: what the gateway balances and splits, and the operator's
controls over it.

Reads (``GET``):

- ``/splits``: every traffic-shifting route — its split's weights in force and the file's, each
  side's outcomes, canaries, sticky key, mirror, strangler status;
- ``/strangler``: every strangler rule's state (step, status, reason, who changed it last);
- ``/breakers``: each guarded service's breaker, and each instance's breaker, ejection and
  health;
- ``/instances``: each service's instances — in flight, available, weight — and those drained.

Writes (``POST``, JSON, behind the same credential and cross-origin checks as every write):

- ``/strangler/<route>/<command>``: ``pause``, ``resume``, ``advance``, ``rollback``; through the
  shared store, so every gateway sharing it follows;
- ``/instances/drain`` and ``/instances/undrain``, body ``{"service": ..., "instance":
  "host:port" or its URL}``: a drained instance takes no new request, those in flight finish.
  A drain is this gateway process's (a multi-worker gateway: the worker that answered).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.traffic.state import running_traffic
from edgeway.gateway.traffic.strangler import StranglerCommandError
from edgeway.gateway.traffic.strangler_store import StoreUnavailable
from edgeway.gateway.upstream.clusters import Cluster, endpoint_url
from edgeway.gateway.upstream.resilient import ServiceResilience
from edgeway.http.exchange import Exchange

__all__ = ["READ_PATHS", "serve_traffic_admin"]

READ_PATHS = (b"/splits", b"/strangler", b"/breakers", b"/instances")
_BODY_LIMIT = 64 * 1024


async def serve_traffic_admin(gateway: Gateway, ex: Exchange) -> bool:
    """Answer ``ex`` when it is one of these endpoints; False when it is not."""
    path = ex.path
    if path.startswith(b"/strangler/"):
        if not _method(ex, b"POST"):
            return True
        await _strangler_command(gateway, ex)
        return True
    if path in (b"/instances/drain", b"/instances/undrain"):
        if _method(ex, b"POST"):
            await _drain(gateway, ex, undrain=path.endswith(b"/undrain"))
        return True
    if path not in READ_PATHS:
        return False
    if not _method(ex, b"GET", b"HEAD"):
        return True
    if path == b"/splits":
        traffic = running_traffic(gateway.env)
        ex.respond_json(200, {"routes": traffic.describe() if traffic is not None else {}})
    elif path == b"/strangler":
        traffic = running_traffic(gateway.env)
        rules = [run.describe() for _, run in sorted(traffic.stranglers.items())] if traffic else []
        # The pid: with several workers, which one answered (each applies the shared step).
        ex.respond_json(200, {"pid": os.getpid(), "rules": rules})
    elif path == b"/breakers":
        ex.respond_json(200, {"services": breakers(gateway)})
    else:
        ex.respond_json(
            200, {"services": {name: instances(c) for name, c in sorted(gateway.clusters.items())}}
        )
    return True


def _method(ex: Exchange, *allowed: bytes) -> bool:
    if ex.method in allowed:
        return True
    ex.respond_problem(405, "Method Not Allowed", headers=[(b"allow", b", ".join(allowed))])
    return False


async def _json_body(ex: Exchange) -> dict[str, Any] | None:
    raw = await ex.body.read_all(_BODY_LIMIT)
    if not raw.strip():
        return {}
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        ex.respond_problem(400, "Bad Request", f"the body is not JSON: {exc}")
        return None
    if not isinstance(found, dict):
        ex.respond_problem(400, "Bad Request", "the body must be a JSON object")
        return None
    return found


async def _strangler_command(gateway: Gateway, ex: Exchange) -> None:
    _, _, rest = ex.path.partition(b"/strangler/")
    route, _, command = rest.decode("utf-8", "replace").rpartition("/")
    if await _json_body(ex) is None:
        return
    traffic = running_traffic(gateway.env)
    run = traffic.stranglers.get(route) if traffic is not None else None
    if run is None:
        known = ", ".join(sorted(traffic.stranglers)) if traffic is not None else ""
        ex.respond_problem(
            404, "Not Found", f"route {route!r} has no strangler rule (routes with one: {known or 'none'})"
        )
        return
    try:
        await run.command(command)
    except StranglerCommandError as exc:
        ex.respond_problem(409, "Conflict", str(exc))
        return
    except StoreUnavailable as exc:
        ex.respond_problem(503, "Service Unavailable", f"{exc}; the rule is unchanged")
        return
    ex.respond_json(200, run.describe())


async def _drain(gateway: Gateway, ex: Exchange, *, undrain: bool) -> None:
    body = await _json_body(ex)
    if body is None:
        return
    service, instance = body.get("service"), body.get("instance")
    if not isinstance(service, str) or not isinstance(instance, str):
        ex.respond_problem(
            400, "Bad Request", 'the body must name {"service": ..., "instance": "host:port" or its URL}'
        )
        return
    cluster = gateway.clusters.get(service)
    if cluster is None:
        ex.respond_problem(
            404, "Not Found", f"no service {service!r} (services: {', '.join(sorted(gateway.clusters))})"
        )
        return
    try:
        if undrain:
            cluster.undrain(instance)
        else:
            cluster.drain(instance)
    except KeyError as exc:
        ex.respond_problem(404, "Not Found", str(exc.args[0]))
        return
    ex.respond_json(200, {"service": service, **instances(cluster)})


def instances(cluster: Cluster) -> dict[str, Any]:
    """A service's instances (serving and draining) and those an operator drained."""
    return {
        "instances": [
            {
                "instance": ep.label,
                "url": endpoint_url(ep),
                "available": ep.available,
                "in_flight": ep.outstanding,
                "weight": ep.weight,
            }
            for ep in cluster.endpoints
        ],
        "finishing": [{"instance": ep.label, "in_flight": ep.outstanding} for ep in cluster.draining],
        "drained": sorted(cluster.drained.values()),
    }


def breakers(gateway: Gateway) -> dict[str, Any]:
    """Each guarded service's breaker and its instances' (state, ejection, health)."""
    out: dict[str, Any] = {}
    for key, component in sorted(gateway.env.components.items()):
        if not isinstance(component, ServiceResilience) or component.guard is None:
            continue
        guard = component.guard
        members = []
        for ep in component.cluster.endpoints:
            state = guard.state(ep)
            members.append(
                {
                    "instance": ep.label,
                    "breaker": state.breaker.state.value if state.breaker is not None else None,
                    "ejected": state.ejected,
                    "healthy": state.health.healthy if state.health is not None else None,
                    "available": ep.available,
                }
            )
        out[key.partition(":")[2]] = {
            "breaker": guard.breaker.state.value if guard.breaker is not None else None,
            "panic": guard.panic,
            "instances": members,
        }
    return out
