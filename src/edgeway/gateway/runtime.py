"""The running form of a gateway config: clusters, the router and the request handler.

The config is compiled once into plain objects (clusters with pools, a router, one ProxyTarget
per route) so the hot path does no lookups in the pydantic model. The stages a request passes,
in order:

    request ids (X-Request-ID, traceparent)  →  path normalisation  →  route match
    →  route action (proxy)  →  access log

Errors become RFC 9457 problem responses carrying the request id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgeway.gateway.access_log import AccessLog
from edgeway.gateway.config.schema import GatewayConfig, ProxyAction
from edgeway.gateway.errors import PathError
from edgeway.gateway.paths import normalize_path
from edgeway.gateway.proxy import HeaderEdits, ProxyTarget, forward
from edgeway.gateway.router import Router, rewrite_path
from edgeway.gateway.upstreams import Cluster, make_cluster
from edgeway.http.errors import HttpError
from edgeway.http.exchange import Exchange, ResponseState
from edgeway.http.headers import reason_phrase
from edgeway.http.limits import PoolLimits, ServerLimits, UpstreamTimeouts
from edgeway.observability.ids import new_request_id, new_traceparent, parse_traceparent, valid_request_id


def server_limits(config: GatewayConfig) -> ServerLimits:
    lim = config.limits
    return ServerLimits(
        max_header_bytes=int(lim.max_header_bytes),
        max_headers=lim.max_headers,
        max_url_bytes=int(lim.max_url_bytes),
        max_body_bytes=None if lim.max_body_bytes is None else int(lim.max_body_bytes),
        header_read_timeout=float(lim.header_read_timeout),
        keepalive_timeout=float(lim.keepalive_timeout),
    )


class Gateway:
    def __init__(self, config: GatewayConfig, access_log: AccessLog | None) -> None:
        self.config = config
        self.name = config.name
        self.access_log = access_log
        self.limits = server_limits(config)
        self.clusters: dict[str, Cluster] = {
            name: make_cluster(
                name,
                [str(u) for u in svc.instances],
                svc.balancer,
                UpstreamTimeouts(
                    connect=float(svc.timeouts.connect),
                    first_byte=float(svc.timeouts.first_byte),
                    total=float(svc.timeouts.total),
                ),
                PoolLimits(
                    max_connections=svc.pool.max_connections, idle_timeout=float(svc.pool.idle_timeout)
                ),
            )
            for name, svc in config.services.items()
        }
        self.router = Router.from_config(config)
        self.targets: dict[str, ProxyTarget] = {}
        for route in config.routes:
            action = route.proxy
            if isinstance(action, ProxyAction) and route.id is not None:
                self.targets[route.id] = ProxyTarget(
                    cluster=self.clusters[action.service],
                    request_headers=HeaderEdits.from_config(
                        action.request_headers.set, action.request_headers.remove
                    ),
                    response_headers=HeaderEdits.from_config(
                        action.response_headers.set, action.response_headers.remove
                    ),
                    websocket=action.websocket,
                    websocket_idle_timeout=float(action.websocket_idle_timeout),
                )
        self._encoded_slash = config.paths.encoded_slash
        self._case_sensitive = config.paths.case_sensitive

    async def handle(self, ex: Exchange) -> None:
        if not ex.request_id or not valid_request_id(ex.request_id):
            ex.request_id = new_request_id()
        incoming = parse_traceparent(ex.traceparent) if ex.traceparent else None
        span = (incoming or new_traceparent()).child()
        tp = span.encode()
        route_id: str | None = None
        try:
            path = normalize_path(ex.path, self._encoded_slash, self._case_sensitive)
            found = self.router.match(ex.method.decode("latin-1"), ex.host.decode("latin-1"), path)
            if found is None:
                self._not_found(ex, path, tp)
                return
            route_id = found.route.id
            upstream_path = rewrite_path(found).encode()
            if ex.query:
                upstream_path += b"?" + ex.query
            await forward(ex, self.targets[route_id], upstream_path, tp)
        except PathError as exc:
            ex.close_after = ex.close_after or not ex.body.complete
            ex.respond_problem(400, "Bad Request", str(exc), headers=self._id_headers(ex, tp))
        except HttpError as exc:
            if ex.state is ResponseState.PENDING:
                ex.close_after = ex.close_after or not ex.body.complete
                ex.respond_problem(
                    exc.status, reason_phrase(exc.status).decode(), str(exc), headers=self._id_headers(ex, tp)
                )
            else:
                ex.abort()
        except asyncio.CancelledError:
            ex.status = ex.status or 499
            raise
        finally:
            if self.access_log is not None:
                self.access_log.record(ex, route_id, span.trace_id, span.parent_id)

    def _not_found(self, ex: Exchange, path: str, tp: bytes) -> None:
        allowed = self.router.allowed_methods(ex.host.decode("latin-1"), path)
        headers = self._id_headers(ex, tp)
        if allowed:
            headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
            ex.respond_problem(
                405, "Method Not Allowed", f"{ex.method.decode()} is not allowed here", headers=headers
            )
        else:
            ex.respond_problem(404, "Not Found", "no route matches this request", headers=headers)

    @staticmethod
    def _id_headers(ex: Exchange, tp: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"x-request-id", ex.request_id), (b"traceparent", tp)]

    # -- admin -----------------------------------------------------------------------------
    def routes_view(self) -> list[dict[str, Any]]:
        out = []
        for route in self.config.routes:
            action = route.proxy
            out.append(
                {
                    "id": route.id,
                    "path": route.match.path,
                    "methods": route.match.methods,
                    "hosts": route.match.hosts,
                    "service": action.service if action else None,
                }
            )
        return out

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready once every service has at least one available endpoint."""
        services = {name: sum(1 for ep in c.endpoints if ep.available) for name, c in self.clusters.items()}
        return all(n > 0 for n in services.values()), {"services": services}

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.close()
