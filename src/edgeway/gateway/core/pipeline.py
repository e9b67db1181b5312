"""The per-route request pipeline: optional filters in front of exactly one action.

A route's config is compiled once into one :data:`Handler`: the action (proxy, aggregate,
endpoint, push) wrapped by the filters the route configures, outermost first::

    cors → auth → rate_limit → validate → cache → concurrency → action

A filter builder gets the route, the shared :class:`GatewayEnv` and the next handler, and returns
a handler wrapping it, or None when the route does not configure that filter, so a route pays
only for what it uses (a bare proxy route is the action itself, no wrapper). A filter refuses a
request by raising :class:`edgeway.gateway.core.errors.Rejection` (the runtime answers the problem);
it adds headers to whatever response follows with ``ctx.ex.add_response_header``.

Long-lived resources a filter or action needs (a JWKS client, a Redis connection, a cache) are
*components* shared through ``env.shared(key, factory)``: created once per gateway, started
before the listener accepts, stopped at shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.http.exchange import Exchange
from edgeway.observability.ids import TraceParent

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import GatewayConfig, Route
    from edgeway.gateway.core.router import RouteMatch
    from edgeway.gateway.upstream.clusters import Cluster
    from edgeway.observability.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller of a request, as the auth filter established it."""

    subject: str
    client_id: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]  # every verified claim, for conditions and Python endpoints
    token: str  # the bearer token, passed on to services that verify it again


@dataclass(slots=True)
class RequestContext:
    """One request on its way through a route's pipeline."""

    ex: Exchange
    match: RouteMatch
    span: TraceParent  # this hop's span (a child of the client's, or a new trace)
    traceparent: bytes  # the span encoded: sent upstream and returned to the client
    identity: Identity | None = None
    # Filled by filters for later stages (e.g. a parsed JSON body the validator already read).
    state: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[RequestContext], Awaitable[None]]
# A filter's synchronous form, for the proxy's callback path (proxy_fast.py): True admits the
# request (and applies what the filter changes), False means "this one needs awaiting" and a
# Rejection refuses it. On False or a Rejection it must have changed nothing: the task path
# then runs the filter again from the start.
Gate = Callable[[RequestContext], bool]


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
    """What route builders share: the config, the clusters, the components and the metrics
    (served on the admin port's ``/metrics``)."""

    def __init__(
        self, config: GatewayConfig, clusters: dict[str, Cluster], metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.clusters = clusters
        # Who may tell services about the client (X-Forwarded-*...): every path that calls a
        # service writes those headers through this one rule.
        self.forwarding = Forwarding(config.trusted_proxies)
        self.components: dict[str, Component] = {}
        # Filter handler -> its synchronous form (Gate), registered by the filter's builder.
        self.gates: dict[Handler, Gate] = {}
        # Assembled route handler -> its filter handlers, outermost first (see gates_of).
        self.route_filters: dict[Handler, list[Handler]] = {}
        # A live reload passes the running config's metrics on, so counters do not restart.
        self._metrics = metrics

    @property
    def metrics(self) -> Metrics:
        """The gateway's Prometheus registry; made on first use, so a gateway that records
        nothing does not import prometheus-client at start."""
        if self._metrics is None:
            from edgeway.observability.metrics import Metrics

            self._metrics = Metrics(self.config.name)
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


ActionBuilder = Callable[["Route", GatewayEnv], Handler]
FilterBuilder = Callable[["Route", GatewayEnv, Handler], Handler | None]


def assemble(route: Route, env: GatewayEnv, action: Handler, filters: list[FilterBuilder]) -> Handler:
    """Wrap ``action`` in the configured filters; ``filters`` is outermost first."""
    handler = action
    wrappers: list[Handler] = []
    for build in reversed(filters):
        wrapped = build(route, env, handler)
        if wrapped is not None:
            handler = wrapped
            wrappers.append(wrapped)
    env.route_filters[handler] = wrappers[::-1]
    return handler


def gates_of(env: GatewayEnv, handler: Handler) -> list[Gate] | None:
    """The synchronous forms of an assembled route's filters, outermost first, when the route
    can run them without awaiting: every filter has one, and there is at most one (a gate that
    admitted has applied its changes, so a later one declining would leave them half-done)."""
    wrappers = env.route_filters.get(handler, [])
    gates = [env.gates.get(w) for w in wrappers]
    if len(gates) > 1 or any(g is None for g in gates):
        return None
    return [g for g in gates if g is not None]
