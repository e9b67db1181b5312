"""The per-route request pipeline: optional filters in front of exactly one action.

A route's config is compiled once into a :class:`RoutePipeline`: the filters the route
configures, outermost first, and its action (proxy, aggregate, endpoint, push)::

    cors → auth → client_cert → rate_limit → validate → cache → concurrency → action

**One filter contract** (Envoy's ``Continue`` / ``StopIteration`` is the model). A filter is an
object with a synchronous ``on_request(ctx)`` that answers one of:

- ``ADMIT`` (None): decided without waiting; the request goes on to the next filter. A filter
  that answered the request itself (a CORS preflight, a cache hit) also returns ``ADMIT``: the
  runtime sees the response written and stops there;
- raise :class:`~edgeway.gateway.core.errors.Rejection`: refused; the runtime answers the problem;
- an awaitable: "continue me in a task" (a key fetch, a rate-limit store, a body read); it admits
  by returning, refuses by raising, and may answer the request itself.

A filter that must act after the action (release a slot, store a response, translate an error)
registers a finisher with ``ctx.defer``. The runtime (:mod:`edgeway.gateway.core.runtime`)
decides where a request runs: when every filter admitted at once, no finisher is registered and
the action can answer from callbacks (the proxy's, see :mod:`edgeway.gateway.actions.proxy`),
the request finishes with no task; otherwise it goes on in a task from where it stopped, no
filter running twice. Any number of filters may run on the callback path.

A filter builder gets the route and the shared :class:`GatewayEnv` and returns a filter, or
None when the route does not configure it, so a route pays only for what it uses. A filter
adds headers to whatever response follows with ``ctx.ex.add_response_header``.

Long-lived resources a filter or action needs (a JWKS client, a Redis connection, a cache) are
*components* shared through ``env.shared(key, factory)``: created once per gateway, started
before the listener accepts, stopped at shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from edgeway.gateway.core.context import ADMIT, Finisher, RequestContext
from edgeway.gateway.core.identity import Identity
from edgeway.gateway.upstream.forwarding import Forwarding

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import GatewayConfig, Route
    from edgeway.gateway.upstream.clusters import Cluster
    from edgeway.observability.metrics import Metrics

__all__ = [
    "ADMIT",
    "Action",
    "ActionBuilder",
    "CallbackAction",
    "Component",
    "Filter",
    "FilterBuilder",
    "Finisher",
    "GatewayEnv",
    "Held",
    "Identity",
    "Reporting",
    "RequestContext",
    "RoutePipeline",
    "Verdict",
    "assemble",
]

# What ``Filter.on_request`` returns: ADMIT (None), or an awaitable that decides in a task.
Verdict = Awaitable[None] | None


class Filter(Protocol):
    """A route's filter, written once for both paths (see the module docstring)."""

    def on_request(self, ctx: RequestContext) -> Verdict: ...


# A route's action, run in a task.
Action = Callable[[RequestContext], Awaitable[None]]


class Held(Protocol):
    """The runtime's side of a request an action holds on callbacks (see ``CallbackAction``)."""

    def finish(self, ctx: RequestContext, failure: BaseException | None) -> None:
        """The held request is over: answer ``failure`` (if any) by the runtime's one rule, log
        it, and let the connection go on."""

    def in_task(self, ctx: RequestContext, work: Awaitable[None]) -> None:
        """The held request needs to await after all: ``work`` finishes it in a task, with the
        runtime's error handling and bookkeeping around it."""


class CallbackAction(Protocol):
    """An action that can answer from callbacks (the proxy). ``start`` returns None when it
    holds the request (it ends it with ``held.finish`` or hands it on with ``held.in_task``),
    or the awaitable that answers it in a task."""

    def start(self, ctx: RequestContext, held: Held) -> Awaitable[None] | None: ...


class Component(Protocol):
    """A long-lived resource shared by routes: started before serving, stopped after."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class Reporting(Protocol):
    """A component with something to say in ``/readyz`` (its key there is the component's)."""

    def report(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=Component)


class GatewayEnv:
    """What route builders share: the config, the clusters, the components, the metrics
    (served on the admin port's ``/metrics``) and the state carried across live reloads."""

    def __init__(
        self,
        config: GatewayConfig,
        clusters: dict[str, Cluster],
        metrics: Metrics | None = None,
        carried: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.clusters = clusters
        # State that outlives one config generation, handed from the running gateway to the one
        # a live reload builds (like the metrics): a component keeps there, under its own key,
        # what must not start over on a reload (traffic split weights set at run time).
        self.carried: dict[str, Any] = carried if carried is not None else {}
        # Who may tell services about the client (X-Forwarded-*...): every path that calls a
        # service writes those headers through this one rule.
        self.forwarding = Forwarding(config.trusted_proxies)
        self.components: dict[str, Component] = {}
        # A live reload passes the running config's metrics on, so counters do not restart.
        self._metrics = metrics

    @property
    def metrics(self) -> Metrics:
        """The gateway's Prometheus registry; made on first use, so a gateway that records
        nothing does not import prometheus-client at start."""
        if self._metrics is None:
            from edgeway.observability.metrics import Metrics

            # The HTTP server families (http_server_requests_total...) are the telemetry's.
            self._metrics = Metrics(self.config.name, http_server=False)
        return self._metrics

    def shared(self, key: str, factory: Callable[[], C]) -> C:
        """The component under ``key``, created by ``factory`` on first use."""
        found = self.components.get(key)
        if found is None:
            found = self.components[key] = factory()
        return found  # type: ignore[return-value]  # one key, one factory, one type

    def reports(self) -> dict[str, dict[str, Any]]:
        """What the components that report say, by component key."""
        return {key: c.report() for key, c in self.components.items() if isinstance(c, Reporting)}

    async def start(self) -> None:
        for component in self.components.values():
            await component.start()

    async def stop(self) -> None:
        for component in reversed(self.components.values()):
            await component.stop()


ActionBuilder = Callable[["Route", GatewayEnv], Action]
FilterBuilder = Callable[["Route", GatewayEnv], Filter | None]


class RoutePipeline:
    """A route compiled for serving: its filters, outermost first, and its action; ``fast`` is
    the action's callback form when it has one (see :class:`CallbackAction`)."""

    __slots__ = ("action", "fast", "filters", "route_id")

    def __init__(
        self,
        route_id: str,
        filters: tuple[Filter, ...],
        action: Action,
        fast: CallbackAction | None = None,
    ) -> None:
        self.route_id = route_id
        self.filters = filters
        self.action = action
        self.fast = fast

    async def run(self, ctx: RequestContext, start: int = 0, waiting: Awaitable[None] | None = None) -> None:
        """The pipeline from filter ``start`` on, in a task; ``waiting`` is the awaitable filter
        ``start - 1`` answered with (it decides first). Finishers run at the end, whatever
        happened."""
        ex = ctx.ex
        try:
            if waiting is not None:
                await waiting
            filters = self.filters
            i = start
            while not ex.state.started and i < len(filters):
                verdict = filters[i].on_request(ctx)
                i += 1
                if verdict is not None:
                    await verdict
            if not ex.state.started:
                await self.action(ctx)
        except BaseException as exc:
            if ctx.finishers is None:
                raise
            await finish_filters(ctx, exc)
        else:
            if ctx.finishers is not None:
                await finish_filters(ctx, None)


async def finish_filters(ctx: RequestContext, failure: BaseException | None) -> None:
    """Run the finishers, innermost first; one that raises replaces the outcome. Raises the
    outcome when it is a failure."""
    finishers = ctx.finishers or []
    ctx.finishers = None
    for finisher in reversed(finishers):
        try:
            pending = finisher(failure)
            if pending is not None:
                await pending
        except BaseException as exc:
            failure = exc
    if failure is not None:
        raise failure


def assemble(route: Route, env: GatewayEnv, action: Action, filters: list[FilterBuilder]) -> RoutePipeline:
    """The route's pipeline: ``action`` behind the configured filters (``filters`` outermost
    first)."""
    assert route.id is not None  # ids are assigned at validation
    built = [build(route, env) for build in filters]
    return RoutePipeline(route.id, tuple(f for f in built if f is not None), action)
