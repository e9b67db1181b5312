"""The proxy action of a route that shifts traffic: chooses the service for each request, then
proxies it exactly as a plain proxy route does.

For each request, in order:

1. the sticky key, when the route has one (``proxy.sticky``: a header, a cookie, the subject);
2. the first canary rule the request meets decides the service; else
3. the split chooses a side (by the key, or at random by weight); else the route's service;
4. with a key, the instance of that service is chosen by consistent hashing on it
   (:meth:`~edgeway.gateway.upstream.clusters.Cluster.keyed`), not by the service's balancer;
5. the mirror, when configured, decides whether to copy the request (:mod:`.mirror`);
6. the request goes to the service's :class:`~edgeway.gateway.actions.proxy.ProxyAction` —
   from the engine's callbacks when that action can, like any proxy route;
7. when it is over, its outcome (status, latency) is counted for the service on this route when
   the route has more than one (:class:`~edgeway.gateway.traffic.split.SideStats`), and the
   copy, if any, is sent: after the client has its answer, so the copy's work can never delay
   the request it copies.

A route that uses none of this gets the plain :class:`ProxyAction` (:func:`build_proxy_route`):
traffic shifting costs nothing where it is not configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import fields

from edgeway.gateway.actions.proxy import HeaderEdits, ProxyAction, ProxyTarget, build_proxy, proxy_target
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.core.pipeline import Action, GatewayEnv, Held
from edgeway.gateway.grpc.proxy import H2ProxyAction
from edgeway.gateway.traffic.match import Canary, canary_service
from edgeway.gateway.traffic.mirror import Copy, Mirror
from edgeway.gateway.traffic.split import SideStats, Split
from edgeway.gateway.traffic.state import traffic_of
from edgeway.gateway.traffic.sticky import StickyKey
from edgeway.http.exchange import ResponseState

__all__ = ["TrafficAction", "build_proxy_route"]

_perf_counter = time.perf_counter
# ProxyTarget's fields in order, and where its cluster is (read once: fields may be added).
_TARGET_FIELDS = tuple(field.name for field in fields(ProxyTarget))
_CLUSTER = _TARGET_FIELDS.index("cluster")
KEYED_CACHE = 2048  # keys whose proxy action a sticky route keeps, per service


class KeyedActions:
    """The proxy actions of one service for sticky keys: each forwards through a view of the
    service's cluster that picks by consistent hashing on its key. The actions of the last
    ``KEYED_CACHE`` keys are kept (a ProxyTarget is a frozen dataclass, several microseconds to
    make); one made before the service's instances changed (discovery) is made again."""

    __slots__ = ("_actions", "_cluster", "_values")

    def __init__(self, target: ProxyTarget) -> None:
        self._cluster = target.cluster
        self._values = [getattr(target, name) for name in _TARGET_FIELDS]
        self._actions: dict[int, ProxyAction] = {}

    def action(self, key: int) -> ProxyAction:
        actions = self._actions
        found = actions.get(key)
        if found is not None and found.target.cluster.endpoints is self._cluster.endpoints:
            return found
        values = list(self._values)
        values[_CLUSTER] = self._cluster.keyed(key)
        found = ProxyAction(ProxyTarget(*values))
        if len(actions) >= KEYED_CACHE and key not in actions:
            del actions[next(iter(actions))]  # the oldest made
        actions[key] = found
        return found


def build_proxy_route(route: Route, env: GatewayEnv) -> Action:
    """The action of a ``proxy`` route: the plain proxy, or a :class:`TrafficAction` when the
    route splits, matches canaries, is sticky or mirrors."""
    proxy = route.proxy
    assert proxy is not None  # a proxy route
    assert route.id is not None  # ids are assigned at validation
    if not proxy.shifts_traffic:
        assert proxy.service is not None  # a route that does not split names its service
        if env.clusters[proxy.service].http2:
            return H2ProxyAction(proxy_target(route, env), proxy.grpc_web)  # a gRPC / HTTP/2 service
        return build_proxy(route, env)
    traffic = traffic_of(env)
    services = dict.fromkeys([*proxy.split_services, *(rule.service for rule in proxy.canary)])
    actions = {name: ProxyAction(proxy_target(route, env, name)) for name in services}
    sides = proxy.split_sides
    split = traffic.split_for(route.id, sides) if sides is not None else None
    if proxy.strangler is not None:
        assert split is not None  # a strangler's route has its split
        traffic.strangle(route.id, proxy.strangler, split)
    stats = {name: traffic.stats_for(route.id, name) for name in services} if len(services) > 1 else None
    mirror = None
    if proxy.mirror is not None:
        mirror = Mirror(
            route.id,
            proxy.mirror,
            proxy_target(route, env, proxy.mirror.service),
            HeaderEdits.from_config(proxy.request_headers.set, proxy.request_headers.remove),
            int(env.config.limits.request_buffer_bytes),
            traffic.book.mirror_stats_for(route.id, proxy.mirror.service),
        )
        traffic.mirrors[route.id] = mirror
    action = TrafficAction(
        route.id,
        actions,
        proxy.service,
        split,
        tuple(Canary(rule) for rule in proxy.canary),
        StickyKey(proxy.sticky) if proxy.sticky is not None else None,
        mirror,
        stats,
    )
    traffic.routes[route.id] = action
    return action


class TrafficAction:
    """A traffic-shifting proxy route's action, in both modes: awaited in a task (``__call__``)
    or started from the engine's callback (``start``, the
    :class:`~edgeway.gateway.core.pipeline.CallbackAction` form)."""

    __slots__ = ("_keyed", "actions", "canaries", "default", "mirror", "route", "split", "stats", "sticky")

    def __init__(
        self,
        route: str,
        actions: Mapping[str, ProxyAction],
        default: str | None,
        split: Split | None,
        canaries: tuple[Canary, ...],
        sticky: StickyKey | None,
        mirror: Mirror | None,
        stats: Mapping[str, SideStats] | None,
    ) -> None:
        self.route = route
        self.actions = dict(actions)  # by service
        self.default = default  # the route's `service` (None with a split)
        self.split = split
        self.canaries = canaries
        self.sticky = sticky
        self.mirror = mirror
        self.stats = dict(stats) if stats is not None else None  # by service; None: one service
        # Sticky: per service, the proxy actions of recent keys (each through a keyed view of the
        # service's cluster).
        self._keyed = {name: KeyedActions(a.target) for name, a in self.actions.items()} if sticky else {}

    def __repr__(self) -> str:
        return f"<TrafficAction {self.route}: {', '.join(self.actions)}>"

    def choose(self, ctx: RequestContext) -> tuple[ProxyAction, str]:
        """The proxy action (and its service) this request goes to."""
        key = self.sticky.hash(ctx) if self.sticky is not None else None
        service = canary_service(self.canaries, ctx.ex) if self.canaries else None
        if service is None:
            split = self.split
            if split is not None:
                service = split.services[split.choose(key)]
            else:
                assert self.default is not None  # a route without a split has a service
                service = self.default
        if key is not None:
            # Consistent hashing on the key picks the instance: through a view of the cluster
            # for this key (the same endpoints and pools, its own balancer).
            return self._keyed[service].action(key), service
        return self.actions[service], service

    # -- in a task ------------------------------------------------------------------------------
    def __call__(self, ctx: RequestContext) -> Awaitable[None]:
        return self._run(ctx)

    async def _run(self, ctx: RequestContext) -> None:
        action, service = self.choose(ctx)
        copy: Copy | None = None
        if self.mirror is not None:
            offered = self.mirror.offer(ctx)
            copy = offered if offered is None or isinstance(offered, Copy) else await offered
        stats = self.stats[service] if self.stats is not None else None
        if stats is None and copy is None:
            await action(ctx)
        else:
            await after(ctx, _forward(ctx, action), stats, copy)

    # -- from the engine's callback ---------------------------------------------------------------
    def start(self, ctx: RequestContext, held: Held) -> Awaitable[None] | None:
        action, service = self.choose(ctx)
        copy: Copy | None = None
        if self.mirror is not None:
            offered = self.mirror.offer(ctx)
            if offered is not None and not isinstance(offered, Copy):
                # The body must be in before the copy is taken: the rest goes on in a task.
                return self._after_body(ctx, offered, action, service)
            copy = offered
        stats = self.stats[service] if self.stats is not None else None
        if stats is None and copy is None:
            return action.start(ctx, held) if action.fast else action(ctx)
        if not action.fast:
            return after(ctx, _forward(ctx, action), stats, copy)
        try:
            work = action.start(ctx, After(held, stats, copy))
        except BaseException as exc:  # refused at once (no instance): answered by the runtime
            _finished(ctx, exc, stats, copy)
            raise
        return None if work is None else after(ctx, work, stats, copy)

    async def _after_body(
        self, ctx: RequestContext, pending: Awaitable[Copy | None], action: ProxyAction, service: str
    ) -> None:
        copy = await pending
        stats = self.stats[service] if self.stats is not None else None
        await after(ctx, _forward(ctx, action), stats, copy)


async def _forward(ctx: RequestContext, action: ProxyAction) -> None:
    # A coroutine around the action, so that what the action raises before it awaits (a passed
    # deadline, a bad WebSocket key) is raised where ``after`` sees it.
    await action(ctx)


# -- after the request: each side's outcome, the mirror's copy ---------------------------------


def outcome_status(ctx: RequestContext, failure: BaseException | None) -> int:
    """The status a request ended with: the one answered, or the one its failure is answered
    with by the runtime's one rule (a client that went away: 499)."""
    ex = ctx.ex
    if failure is None:
        return ex.status
    if isinstance(failure, asyncio.CancelledError):
        return 499
    if ex.state is not ResponseState.PENDING:
        return 502  # the response had started and was cut
    status = getattr(failure, "status", None)
    return status if isinstance(status, int) else 500


def _finished(
    ctx: RequestContext, failure: BaseException | None, stats: SideStats | None, copy: Copy | None
) -> None:
    if stats is not None:
        stats.record(outcome_status(ctx, failure), _perf_counter() - ctx.ex.started)
    if copy is not None:
        copy.send()  # after the real request: the copy's work never delays it


class After:
    """The runtime's :class:`~edgeway.gateway.core.pipeline.Held`, with what must happen when the
    request is over: its side's outcome counted, the mirror's copy sent."""

    __slots__ = ("copy", "held", "stats")

    def __init__(self, held: Held, stats: SideStats | None, copy: Copy | None) -> None:
        self.held = held
        self.stats = stats
        self.copy = copy

    def finish(self, ctx: RequestContext, failure: BaseException | None) -> None:
        if self.stats is not None:
            self.stats.record(outcome_status(ctx, failure), _perf_counter() - ctx.ex.started)
        self.held.finish(ctx, failure)
        if self.copy is not None:
            self.copy.send()

    def in_task(self, ctx: RequestContext, work: Awaitable[None]) -> None:
        self.held.in_task(ctx, after(ctx, work, self.stats, self.copy))


async def after(
    ctx: RequestContext, work: Awaitable[None], stats: SideStats | None, copy: Copy | None
) -> None:
    """``work``, then its outcome counted for its side and the mirror's copy sent."""
    failure: BaseException | None = None
    try:
        await work
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _finished(ctx, failure, stats, copy)
