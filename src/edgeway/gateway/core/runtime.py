"""The running form of a gateway config: clusters, the router and the request handler.

The config is compiled once into plain objects (clusters with pools, a router, one pipeline per
route: its filters and its action, see :mod:`edgeway.gateway.core.pipeline`) so the hot path does
no lookups in the pydantic model. The stages a request passes, in order:

    request ids (X-Request-ID, traceparent)  →  path normalisation  →  route match
    →  route filters  →  route action (proxy, aggregate, endpoint, push, transcode)  →  access log

The :class:`Gateway` is the engine's handler (:data:`edgeway.http.server.Handler`): the engine
calls it from its protocol callbacks, and it runs every stage that decides at once right there.
A request goes on in a task only from the first filter that waits, or for an action that cannot
answer from callbacks; the proxy can (:mod:`edgeway.gateway.actions.proxy`), so the common
proxied request costs no task. Whatever ends a request, on either path, is answered by one rule
(:meth:`Gateway._fail`): an RFC 9457 problem carrying the request id while nothing has been
sent, else the response is cut; a client that went away is logged as 499.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

from edgeway.gateway.actions.aggregate.action import build_aggregate
from edgeway.gateway.actions.endpoints.action import build_endpoint
from edgeway.gateway.actions.proxy import ProxyAction
from edgeway.gateway.actions.push.action import build_push
from edgeway.gateway.actions.transcode.build import build_transcode
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.core.errors import PathError, Rejection
from edgeway.gateway.core.paths import normalize_path
from edgeway.gateway.core.pipeline import (
    ActionBuilder,
    CallbackAction,
    Filter,
    FilterBuilder,
    GatewayEnv,
    RoutePipeline,
    assemble,
    finish_filters,
)
from edgeway.gateway.core.router import Router
from edgeway.gateway.filters.auth.filter import build_auth
from edgeway.gateway.filters.cache.build import build_cache
from edgeway.gateway.filters.client_cert import build_client_cert
from edgeway.gateway.filters.concurrency import build_concurrency
from edgeway.gateway.filters.cors import build_cors, preflight_match
from edgeway.gateway.filters.ratelimit.filter import build_rate_limit
from edgeway.gateway.filters.validation import build_validation
from edgeway.gateway.grpc.status import is_grpc, respond_status
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.telemetry.meters import RequestTracing, RouteMeter
from edgeway.gateway.traffic.action import TrafficAction, build_proxy_route
from edgeway.gateway.upstream.clusters import Cluster, make_cluster
from edgeway.gateway.upstream.discovery import use_discovery
from edgeway.gateway.upstream.resilient import Refused
from edgeway.http.errors import HttpError
from edgeway.http.exchange import Exchange, Headers, ResponseState
from edgeway.http.headers import reason_phrase
from edgeway.http.limits import Http2Limits, PoolLimits, ServerLimits, UpstreamTimeouts
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

log = logging.getLogger("edgeway.gateway")

_perf_counter: Final = time.perf_counter  # a C static in the compiled build
# The Allow of a refused TRACE on a route taking any method: RFC 9110's methods and PATCH,
# less TRACE and CONNECT (the engine answers CONNECT 501 before routing).
_TRACE_ALLOW: Final = b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

ACTIONS: dict[str, ActionBuilder] = {
    # The plain proxy, or the traffic-shifting one (splits, canaries, sticky, mirror).
    "proxy": build_proxy_route,
    "aggregate": build_aggregate,
    "endpoint": build_endpoint,
    "push": build_push,
    "transcode": build_transcode,
}
# Outermost first: CORS answers preflights before auth; auth (a token, then a client
# certificate) before the limits keyed by user; the cache after auth (its key holds the
# identity); shedding last, so cache hits never queue.
FILTERS: list[FilterBuilder] = [
    build_cors,
    build_auth,
    build_client_cert,
    build_rate_limit,
    build_validation,
    build_cache,
    build_concurrency,
]


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
        send_timeout=float(lim.send_timeout),
    )


def http2_limits(config: GatewayConfig) -> Http2Limits | None:
    """The engine's HTTP/2 limits when the listener serves HTTP/2 (``listen.http2``), else None."""
    if not config.listen.http2:
        return None
    lim = config.limits.http2
    return Http2Limits(
        max_concurrent_streams=lim.max_concurrent_streams,
        initial_window_bytes=int(lim.initial_window),
        connection_body_buffer_bytes=int(lim.connection_body_buffer),
        stream_write_buffer=int(lim.stream_write_buffer),
        max_resets=lim.max_resets,
        max_pings=lim.max_pings,
        max_settings=lim.max_settings,
        max_empty_frames=lim.max_empty_frames,
        budget_window=float(lim.budget_window),
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
                max_response_head_bytes=int(svc.response_limits.max_head_bytes),
                max_response_headers=svc.response_limits.max_headers,
                h2_ping_interval=float(svc.keepalive.interval) if svc.keepalive is not None else None,
                h2_ping_timeout=float(svc.keepalive.timeout) if svc.keepalive is not None else 20.0,
            ),
            svc.tls_context(),
            svc.tls.server_name if svc.tls is not None else None,
            dict(svc.weights),
            http2=svc.protocol == "h2",
        )
        for name, svc in config.services.items()
    }


def reread_tls(config: GatewayConfig, reused: Collection[str]) -> dict[str, ssl.SSLContext]:
    """The TLS contexts of the reused services that configure ``tls``, their files read again:
    a reload with the same config may come with rotated certificates."""
    out: dict[str, ssl.SSLContext] = {}
    for name in reused:
        svc = config.services[name]
        context = svc.tls_context()
        if context is not None:
            out[name] = context
    return out


class _Served:
    """A route as the hot path reads it: native fields of a compiled class, so the callback
    path calls the proxy action natively rather than through the pipeline's protocol types
    (a generic method call with argument parsing). ``callback``: another action that can
    answer from callbacks (a traffic-shifting proxy route), read only when ``fast`` is None."""

    __slots__ = ("callback", "fast", "filters", "pipeline")

    def __init__(
        self, pipeline: RoutePipeline, fast: ProxyAction | None, callback: CallbackAction | None = None
    ) -> None:
        self.pipeline = pipeline
        self.filters: tuple[Filter, ...] = pipeline.filters
        self.fast = fast
        self.callback = callback


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
        carried: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.access_log = access_log
        self.limits = server_limits(config)
        self.http2 = http2_limits(config)  # None: the listener serves HTTP/1.1 only
        self.clusters = make_clusters(config, reuse)
        self._not_owned: set[str] = set(reuse or ())
        # Put in the reused clusters only when this gateway takes over (adopt_clusters): a
        # reload that fails to start must leave the running one as it was.
        self._reread_tls = reread_tls(config, self._not_owned)
        self.inflight = 0
        self.env = GatewayEnv(config, self.clusters, metrics, carried)
        use_discovery(self.env)  # first component: routes' components start with instances known
        telemetry = telemetry_of(self.env)
        # Bound once: the request path counts into these (None: metrics off, tracing off).
        self._route_meters: dict[str | None, RouteMeter] | None = telemetry.routes()
        self._tracer: RequestTracing | None = telemetry.tracer
        self.router = Router.from_config(config)
        self.pipelines: dict[str, RoutePipeline] = {}
        self._served: dict[str, _Served] = {}
        for route in config.routes:
            assert route.id is not None  # ids are assigned at validation
            action = ACTIONS[route.action_name](route, self.env)
            pipeline = self.pipelines[route.id] = assemble(route, self.env, action, FILTERS)
            fast = None
            callback: CallbackAction | None = None
            if isinstance(action, ProxyAction) and action.fast:
                # A proxy route: a request whose filters all admit at once may be answered
                # from callbacks.
                pipeline.fast = fast = action
            elif isinstance(action, TrafficAction):
                pipeline.fast = callback = action
            self._served[route.id] = _Served(pipeline, fast, callback)
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
        """Every cluster of this gateway is its own to close (the lent ones included); the lent
        ones connect with this config's TLS files from now on."""
        self._not_owned.clear()
        for name, context in self._reread_tls.items():
            self.clusters[name].use_tls(context)
        self._reread_tls = {}

    # -- serving ---------------------------------------------------------------------------
    # The engine's one entry point (http.server.Handler). Everything a request needs first (ids,
    # path, route) and every filter that decides at once runs here, in the engine's callback;
    # a request goes on in a task only from the first filter that waits, or for an action that
    # cannot answer from callbacks. A request that finishes here returns None (it called
    # ``ex.handler_done()``); one that waits returns the awaitable the engine runs in a task.
    def __call__(self, ex: Exchange) -> Awaitable[None] | None:
        return self._route(ex, True)

    async def handle(self, ex: Exchange) -> None:
        """The same request, all of it in the caller's task (no callback path)."""
        work = self._route(ex, False)
        if work is not None:
            await work

    def _route(self, ex: Exchange, callbacks: bool) -> Awaitable[None] | None:
        self.inflight += 1
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
        tracer = self._tracer
        if tracer is not None:
            span = tracer.begin(ex, incoming, span)  # the server span's ids, its sampling decision
        tp = span.encode()
        try:
            path = normalize_path(ex.path, self._encoded_slash, self._case_sensitive)
        except PathError as exc:
            self._fail(ex, tp, None, exc)
            self._answered(ex, None, span)
            return None
        host = ex.host.decode("latin-1")
        found = self.router.match(ex.method.decode("latin-1"), host, path)
        if found is None and ex.method == b"OPTIONS":
            # A CORS preflight is routed by the method it asks about (see cors.py).
            found = preflight_match(self.router, self.config, ex, host, path)
        if found is None:
            self._not_found(ex, path, tp)
            self._answered(ex, None, span)
            return None
        if found.route.methods is None and len(ex.method) == 5 and ex.method.upper() == b"TRACE":
            # Only a route that lists TRACE forwards it (see _refuse_trace); the length test
            # keeps this to one comparison for every other request.
            self._refuse_trace(ex, tp)
            self._answered(ex, None, span)
            return None
        route_id = found.route.id
        served = self._served[route_id]
        pipeline = served.pipeline
        ctx = RequestContext(ex, found, span, tp)
        filters = served.filters
        n = len(filters)
        i = 0
        try:
            while i < n:
                verdict = filters[i].on_request(ctx)
                i += 1
                if verdict is not None:
                    return self._guarded(ctx, pipeline.run(ctx, i, verdict))  # it waits: a task
                if ex.state.started:
                    break  # the filter answered the request itself
            else:
                fast = served.fast
                if callbacks and fast is not None and ctx.finishers is None:
                    work = fast.start(ctx, self)
                    return None if work is None else self._guarded(ctx, work)
                callback = served.callback
                if callback is not None and callbacks and ctx.finishers is None:
                    work = callback.start(ctx, self)
                    return None if work is None else self._guarded(ctx, work)
                return self._guarded(ctx, pipeline.run(ctx, n))
        except Exception as exc:
            if ctx.finishers is not None:
                return self._guarded(ctx, finish_filters(ctx, exc))
            if not self._fail(ex, tp, route_id, exc):
                self._done(ex, route_id, span)
                raise  # the engine answers 500 and logs it
        if ctx.finishers is not None:
            return self._guarded(ctx, finish_filters(ctx, None))
        self._answered(ex, route_id, span)
        return None

    async def _guarded(self, ctx: RequestContext, work: Awaitable[None]) -> None:
        """``work`` for ``ctx``, in a task, inside the gateway's error rule and bookkeeping."""
        ex = ctx.ex
        try:
            await work
        except BaseException as exc:
            if not self._fail(ex, ctx.traceparent, ctx.match.route.id, exc):
                raise
        finally:
            self._done(ex, ctx.match.route.id, ctx.span)

    def _answered(self, ex: Exchange, route_id: str | None, span: TraceParent) -> None:
        """A request answered in the engine's callback: bookkeeping, then the next request."""
        self._done(ex, route_id, span)
        ex.handler_done()

    def _done(self, ex: Exchange, route_id: str | None, span: TraceParent) -> None:
        self.inflight -= 1
        if self.access_log is not None:
            self.access_log.record(ex, route_id, span.trace_id, span.parent_id)
        meters = self._route_meters
        if meters is not None:
            meters[route_id].record(ex.method, ex.status, _perf_counter() - ex.started)
        tracer = self._tracer
        if tracer is not None:
            tracer.end(ex, route_id, span)

    # -- Held: a request the proxy answers from callbacks -----------------------------------
    def finish(self, ctx: RequestContext, failure: BaseException | None) -> None:
        ex = ctx.ex
        route_id = ctx.match.route.id
        if failure is not None and not self._fail(ex, ctx.traceparent, route_id, failure):
            log.error("unexpected error on the callback path for %r", ex, exc_info=failure)
            if ex.state is ResponseState.PENDING:
                ex.respond_problem(500, "Internal Server Error")
            else:
                ex.abort()
        self._answered(ex, route_id, ctx.span)

    def in_task(self, ctx: RequestContext, work: Awaitable[None]) -> None:
        ctx.ex.continue_in_task(self._guarded(ctx, work))

    # -- the one error rule -------------------------------------------------------------------
    def _fail(self, ex: Exchange, tp: bytes, route_id: str | None, exc: BaseException) -> bool:
        """Answer what ended a request, the same way on every path: a problem while nothing has
        been sent, else the response is cut; a client that went away is logged as 499. False
        for an exception this rule does not know (the engine answers it as a 500)."""
        if isinstance(exc, Refused):
            exc = exc.rejection()  # a service's guard refused the proxied request: its 503
        if isinstance(exc, Rejection):
            self._count_rejection(route_id, exc)
            if ex.state is ResponseState.PENDING:
                ex.close_after = ex.close_after or not ex.body.complete
                headers = [*exc.headers, *self._id_headers(ex, tp)]
                if is_grpc(ex.header(b"content-type")):
                    respond_status(ex, exc.status, exc.detail or exc.title, headers)
                else:
                    ex.respond_problem(exc.status, exc.title, exc.detail, headers=headers, members=exc.extra)
            else:
                ex.abort()
        elif isinstance(exc, HttpError | PathError):
            if ex.state is ResponseState.PENDING:
                ex.close_after = ex.close_after or not ex.body.complete
                title = "Bad Request" if isinstance(exc, PathError) else reason_phrase(exc.status).decode()
                if is_grpc(ex.header(b"content-type")):
                    respond_status(ex, exc.status, str(exc), self._id_headers(ex, tp))
                else:
                    ex.respond_problem(exc.status, title, str(exc), headers=self._id_headers(ex, tp))
            else:
                ex.abort()
        elif isinstance(exc, asyncio.CancelledError):
            ex.status = ex.status or 499
            return False
        else:
            return False
        return True

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
        if is_grpc(ex.header(b"content-type")):
            # A gRPC client reads UNIMPLEMENTED: this method is not served here.
            respond_status(ex, 404, f"no route serves {path}", headers)
            return
        if allowed:
            headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
            ex.respond_problem(
                405, "Method Not Allowed", f"{ex.method.decode()} is not allowed here", headers=headers
            )
        else:
            ex.respond_problem(404, "Not Found", "no route matches this request", headers=headers)

    def _refuse_trace(self, ex: Exchange, tp: bytes) -> None:
        """405 for TRACE on a route taking any method, before any filter or the service runs.

        A service answering TRACE echoes the request, Cookie and Authorization included, into a
        body a script can read (cross-site tracing); nginx refuses it the same way. A route opts in
        by listing TRACE in ``match.methods``. Compared case-insensitively: a service may treat
        ``trace`` as TRACE. The route takes any method, so ``Allow`` names the usual ones.
        """
        headers = [(b"allow", _TRACE_ALLOW), *self._id_headers(ex, tp)]
        detail = "TRACE is refused at the gateway unless a route lists it in match.methods"
        if is_grpc(ex.header(b"content-type")):
            respond_status(ex, 405, detail, headers)
        else:
            ex.respond_problem(405, "Method Not Allowed", detail, headers=headers)

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
