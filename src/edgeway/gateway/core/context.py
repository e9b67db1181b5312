"""One request on its way through a route: the context every filter and action gets.

Compiled with the hot path (pyproject.toml): one is made per routed request, on the callback
path too, so it is a plain class with slots and no per-request dict unless a filter asks for one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from edgeway.gateway.core.identity import Identity
from edgeway.http.exchange import Exchange
from edgeway.observability.ids import TraceParent

if TYPE_CHECKING:
    from edgeway.gateway.core.router import RouteMatch

# What a filter's ``on_request`` returns when it has decided without waiting: the request goes
# on to the next filter (or, when the filter answered it itself, stops here). See
# :mod:`edgeway.gateway.core.pipeline`.
ADMIT: Final = None

# Run after the action (or after a later filter refused or answered), innermost filter first,
# with what ended the request (None: nothing failed). It may return an awaitable to finish in
# the request's task, and it may raise: its exception replaces the outcome, as one raised in a
# wrapper's ``finally`` would.
Finisher = Callable[[BaseException | None], Awaitable[None] | None]


class RequestContext:
    """One request on its way through a route's pipeline."""

    __slots__ = ("_state", "ex", "finishers", "identity", "match", "span", "traceparent")

    def __init__(self, ex: Exchange, match: RouteMatch, span: TraceParent, traceparent: bytes) -> None:
        self.ex = ex
        self.match = match
        self.span = span  # this hop's span (a child of the client's, or a new trace)
        self.traceparent = traceparent  # the span encoded: sent upstream and returned to the client
        self.identity: Identity | None = None
        # What filters asked to run once the request is over (see ``defer``); None: nothing.
        self.finishers: list[Finisher] | None = None
        self._state: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<RequestContext {self.ex!r}>"

    @property
    def state(self) -> dict[str, Any]:
        """Filled by filters for later stages (e.g. a parsed JSON body the validator read)."""
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    @property
    def route_id(self) -> str:
        return self.match.route.id

    def defer(self, finisher: Finisher) -> None:
        """Run ``finisher`` once the request is over (a filter's "after": release a slot, store
        a response, translate an error). A request with finishers is finished in a task."""
        finishers = self.finishers
        if finishers is None:
            self.finishers = [finisher]
        else:
            finishers.append(finisher)
