"""The running form of a gateway config: clusters, the router and the request handler.

The config is compiled once into plain objects (clusters with pools, a router, one handler per
route: its action wrapped in its filters, see :mod:`edgeway.gateway.core.pipeline`) so the hot path
does no lookups in the pydantic model. The stages a request passes, in order:

    request ids (X-Request-ID, traceparent)  →  path normalisation  →  route match
    →  route filters  →  route action (proxy, aggregate, endpoint, push)  →  access log

Errors become RFC 9457 problem responses carrying the request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from edgeway.gateway.actions.aggregate.action import build_aggregate
from edgeway.gateway.actions.endpoints.action import build_endpoint
from edgeway.gateway.actions.proxy import build_proxy
from edgeway.gateway.actions.proxy_fast import FastProxy, build_fast_proxy
from edgeway.gateway.actions.push.action import build_push
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.errors import PathError, Rejection
from edgeway.gateway.core.paths import normalize_path
from edgeway.gateway.core.pipeline import (
    ActionBuilder,
    FilterBuilder,
    GatewayEnv,
    Handler,
    RequestContext,
    assemble,
    gates_of,
)
from edgeway.gateway.core.router import RouteMatch, Router
from edgeway.gateway.filters.auth.filter import build_auth
from edgeway.gateway.filters.cache.build import build_cache
from edgeway.gateway.filters.concurrency import build_concurrency
from edgeway.gateway.filters.cors import build_cors, preflight_match
from edgeway.gateway.filters.ratelimit.filter import build_rate_limit
from edgeway.gateway.filters.validation import build_validation
from edgeway.gateway.upstream.clusters import Cluster, make_cluster
from edgeway.gateway.upstream.discovery import use_discovery
from edgeway.http.errors import HttpError
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.headers import reason_phrase
from edgeway.http.limits import PoolLimits, ServerLimits, UpstreamTimeouts
from edgeway.observability.ids import (
    TraceParent,
    new_request_id,
    new_request_ids,
    parse_traceparent,
    valid_request_id,
)
from edgeway.observability.metrics import Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

ACTIONS: dict[str, ActionBuilder] = {
    "proxy": build_proxy,
    "aggregate": build_aggregate,
    "endpoint": build_endpoint,
    "push": build_push,
}
# Outermost first: CORS answers preflights before auth; auth before the limits keyed by user;
# the cache after auth (its key holds the identity); shedding last, so cache hits never queue.
FILTERS: list[FilterBuilder] = [
    build_cors,
    build_auth,
    build_rate_limit,
    build_validation,
    build_cache,
    build_concurrency,
]


class Prepared:
    """What every request needs before its route runs (see ``Gateway._prepare``)."""

    # A plain class, not a NamedTuple: see http.upstream.ResponseHead.
    __slots__ = ("match", "path", "span", "tp")

    def __init__(self, span: TraceParent, tp: bytes, path: str | PathError, match: RouteMatch | None) -> None:
        self.span = span  # this hop's span: a child of the client's, or a new trace
        self.tp = tp  # the span encoded for traceparent headers
        self.path = path  # the normalised path, or why it could not be normalised
        self.match = match


def server_limits(config: GatewayConfig) -> ServerLimits:
    lim = config.limits
    return ServerLimits(
        max_header_bytes=int(lim.max_header_bytes),
        max_headers=lim.max_headers,
        max_url_bytes=int(lim.max_url_bytes),
        max_body_bytes=None if lim.max_body_bytes is None else int(lim.max_body_bytes),
        header_read_timeout=float(lim.header_read_timeout),
        body_read_timeout=float(lim.body_read_timeout),
        keepalive_timeout=float(lim.keepalive_timeout),
    )


def make_clusters(config: GatewayConfig, reuse: Mapping[str, Cluster] | None = None) -> dict[str, Cluster]:
    """A cluster per service; those in ``reuse`` (live reload: unchanged services) are kept as
    they are, pools and connections included."""
    reuse = reuse or {}
    return {
        name: reuse.get(name)
        or make_cluster(
            name,
            [str(u) for u in svc.instances],
            svc.balancer,
            UpstreamTimeouts(
                connect=float(svc.timeouts.connect),
                first_byte=float(svc.timeouts.first_byte),
                total=float(svc.timeouts.total),
            ),
            PoolLimits(
                max_connections=svc.pool.max_connections,
                max_idle=svc.pool.max_idle,
                idle_timeout=float(svc.pool.idle_timeout),
            ),
        )
        for name, svc in config.services.items()
    }


class Gateway:
    """One compiled config. ``await start()`` before serving (components: JWKS, Redis...),
    ``await stop()`` after.

    Live reload builds a new Gateway beside the running one, lending it the clusters of
    unchanged services (``reuse``): its :meth:`stop` leaves them open (a new config that fails
    to start must not close what the running one uses) until it :meth:`adopt_clusters` when it
    takes over, and the old one :meth:`hand_over` them. ``inflight`` counts the requests inside
    :meth:`handle`, so the old one is stopped only once they are done.
    """

    def __init__(
        self,
        config: GatewayConfig,
        access_log: AccessLog | None,
        reuse: Mapping[str, Cluster] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.access_log = access_log
        self.limits = server_limits(config)
        self.clusters = make_clusters(config, reuse)
        self._not_owned: set[str] = set(reuse or ())
        self.inflight = 0
        self.env = GatewayEnv(config, self.clusters, metrics)
        use_discovery(self.env)  # first component: routes' components start with instances known
        self.router = Router.from_config(config)
        self.handlers: dict[str, Handler] = {}
        self._fast: dict[str, FastProxy] = {}
        for route in config.routes:
            assert route.id is not None  # ids are assigned at validation
            action = ACTIONS[route.action_name](route, self.env)
            handler = self.handlers[route.id] = assemble(route, self.env, action, FILTERS)
            gates = gates_of(self.env, handler)
            if gates is not None and route.proxy is not None:
                # A proxy route whose filters (if any) can decide without awaiting: requests
                # may take the callback path.
                fast = build_fast_proxy(route, self.env, gates)
                if fast is not None:
                    self._fast[route.id] = fast
        self._encoded_slash = config.paths.encoded_slash
        self._case_sensitive = config.paths.case_sensitive
        self._rejections: Counter | None = None

    async def start(self) -> None:
        await self.env.start()

    async def stop(self) -> None:
        await self.env.stop()
        self.close()

    def hand_over(self, names: Collection[str]) -> None:
        """These clusters now belong to another gateway: :meth:`close` leaves them open."""
        self._not_owned.update(names)

    def adopt_clusters(self) -> None:
        """Every cluster of this gateway is its own to close (the lent ones included)."""
        self._not_owned.clear()

    # -- serving ---------------------------------------------------------------------------
    # The engine calls ``take`` first (no task yet): a request on a route with a callback path
    # (proxy_fast) is answered from callbacks. Otherwise it awaits ``gateway(ex)`` in a task.
    def __call__(self, ex: Exchange) -> Awaitable[None]:
        return self.handle(ex)

    def take(self, ex: Exchange) -> bool:
        if not self._fast:
            return False
        prepared = ex.prepared = self._prepare(ex)
        found = prepared.match
        if found is None:
            return False
        fast = self._fast.get(found.route.id)
        if fast is None:
            return False
        self.inflight += 1
        if fast.start(ex, found, prepared.span, prepared.tp, self._taken_done, self._answer_error):
            return True
        self.inflight -= 1
        return False

    def _taken_done(self, ex: Exchange, route_id: str, span: TraceParent) -> None:
        self.inflight -= 1
        if self.access_log is not None:
            self.access_log.record(ex, route_id, span.trace_id, span.parent_id)

    def _prepare(self, ex: Exchange) -> Prepared:
        """Request ids, path normalisation and the route match: what every request needs first."""
        fresh_id = not ex.request_id or not valid_request_id(ex.request_id)
        incoming = parse_traceparent(ex.traceparent) if ex.traceparent else None
        if incoming is not None:
            span = incoming.child()
            if fresh_id:
                ex.request_id = new_request_id()
        else:
            request_id, trace_id, span_id = new_request_ids()
            span = TraceParent(trace_id, span_id, b"01")
            if fresh_id:
                ex.request_id = request_id
        tp = span.encode()
        try:
            path = normalize_path(ex.path, self._encoded_slash, self._case_sensitive)
        except PathError as exc:
            return Prepared(span, tp, exc, None)
        host = ex.host.decode("latin-1")
        found = self.router.match(ex.method.decode("latin-1"), host, path)
        if found is None and ex.method == b"OPTIONS":
            # A CORS preflight is routed by the method it asks about (see cors.py).
            found = preflight_match(self.router, self.config, ex, host, path)
        return Prepared(span, tp, path, found)

    async def handle(self, ex: Exchange) -> None:
        prepared = ex.prepared
        if prepared is None:
            prepared = self._prepare(ex)
        else:
            ex.prepared = None
        self.inflight += 1
        await self._serve(ex, prepared)

    async def _serve(self, ex: Exchange, prepared: Prepared) -> None:
        """Run the matched route's handler; the caller has counted the request in ``inflight``."""
        span, tp, path, found = prepared.span, prepared.tp, prepared.path, prepared.match
        route_id: str | None = None
        try:
            if isinstance(path, PathError):
                raise path
            if found is None:
                self._not_found(ex, path, tp)
                return
            route_id = found.route.id
            await self.handlers[route_id](RequestContext(ex, found, span, tp))
        except PathError as exc:
            ex.close_after = ex.close_after or not ex.body.complete
            ex.respond_problem(400, "Bad Request", str(exc), headers=self._id_headers(ex, tp))
        except Rejection as exc:
            self._count_rejection(route_id, exc)
            if ex.state is ResponseState.PENDING:
                ex.close_after = ex.close_after or not ex.body.complete
                ex.respond_problem(
                    exc.status,
                    exc.title,
                    exc.detail,
                    headers=[*exc.headers, *self._id_headers(ex, tp)],
                    members=exc.extra,
                )
            else:
                ex.abort()
        except HttpError as exc:
            if ex.state is ResponseState.PENDING:
                self._answer_error(ex, exc, tp)
            else:
                ex.abort()
        except asyncio.CancelledError:
            ex.status = ex.status or 499
            raise
        finally:
            self.inflight -= 1
            if self.access_log is not None:
                self.access_log.record(ex, route_id, span.trace_id, span.parent_id)

    def _answer_error(self, ex: Exchange, exc: HttpError, tp: bytes) -> None:
        """The problem response for an engine error (upstream failure, timeout) before the
        response started."""
        ex.close_after = ex.close_after or not ex.body.complete
        ex.respond_problem(
            exc.status, reason_phrase(exc.status).decode(), str(exc), headers=self._id_headers(ex, tp)
        )

    def _count_rejection(self, route_id: str | None, exc: Rejection) -> None:
        counter = self._rejections
        if counter is None:
            # Made on the first refusal: a gateway that refuses nothing never loads the metrics.
            counter = self._rejections = self.env.metrics.counter(
                "edgeway_gateway_rejections_total",
                "Requests a route's filter or action refused with a problem, by route, status and "
                "reason (the problem's reason: missing, expired, revoked, insufficient_scope, "
                "rate_limited...; empty when it has none).",
                ("route", "status", "reason"),
            )
        reason = exc.extra.get("reason")
        counter.labels(route_id or "", str(exc.status), reason if isinstance(reason, str) else "").inc()

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
    def _id_headers(ex: Exchange, tp: bytes) -> Headers:
        return [(b"x-request-id", ex.request_id), (b"traceparent", tp)]

    # -- admin -----------------------------------------------------------------------------
    def routes_view(self) -> list[dict[str, Any]]:
        return [route.describe() for route in self.router.routes]

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready once every service has at least one available endpoint. Components add what they
        report (the auth component: its keys and revocation sources) without deciding readiness."""
        services = {name: sum(1 for ep in c.endpoints if ep.available) for name, c in self.clusters.items()}
        return all(n > 0 for n in services.values()), {"services": services, **self.env.reports()}

    def close(self) -> None:
        for name, cluster in self.clusters.items():
            if name not in self._not_owned:
                cluster.close()
