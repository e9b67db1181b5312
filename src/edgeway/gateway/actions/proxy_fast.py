"""The proxy action's callback path: a request answered with no task, coroutine or future.

The common case of a gateway — a request without a body, on a proxy route without a resilience
policy whose filters can decide without awaiting (none, or ``auth`` with a known key: see
``pipeline.Gate``), to an upstream that has an idle pooled connection and answers in one read —
does not need to await anything. The engine offers such a request to :meth:`Gateway.take`
before it starts a task; when the route qualifies, :class:`ProxyFlight` writes the request on
the idle connection and follows the response from the connection's callbacks
(:class:`~edgeway.http.upstream.UpstreamListener`): once the head and the whole body are in, it
answers the client in one write, returns the connection and logs the request.

Whatever is not that common case goes back to the ordinary proxy action, with the same
semantics (headers, deadlines, status policy) because both use the functions of
:mod:`edgeway.gateway.actions.proxy`:

* a request that never qualifies (a deadline header, a body, HEAD, an upgrade): ``take``
  declines before choosing an instance, and the engine runs the route's handler in a task;
* no idle connection to the chosen instance: a task makes the attempt on that same instance
  (:func:`proxy.attempt`: connect, or wait for a free connection), so the balancer's choice
  stands — declining would make the task path choose again and skew round-robin;
* a pooled connection the upstream had closed (reset before any response byte, idempotent
  method): the same, and that attempt retries on a fresh connection;
* a response that arrives in several reads: a task streams it (:func:`proxy.respond_upstream`).

The saving is measured in ``docs/benchmarks.md``: about a third of the gateway's CPU per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgeway.gateway.actions.proxy import (
    IDEMPOTENT,
    ProxyTarget,
    attempt,
    proxy_target,
    request_head,
    respond_upstream,
    response_headers,
)
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Gate, GatewayEnv, RequestContext
from edgeway.gateway.core.router import RouteMatch, rewrite_path
from edgeway.gateway.upstream.clusters import Endpoint
from edgeway.http.errors import HttpError, UpstreamReset
from edgeway.http.exchange import Exchange, ResponseState
from edgeway.http.upstream import UpstreamConnection
from edgeway.observability.ids import TraceParent
from edgeway.resilience.balancer import NoInstanceAvailable
from edgeway.resilience.deadline import incoming_budget

# (exchange, route id, span): the gateway's bookkeeping once a taken request is over.
Done = Callable[[Exchange, str, TraceParent], None]
# (exchange, error, traceparent): answer a failed request as the task path would.
Fail = Callable[[Exchange, HttpError, bytes], None]


class FastProxy:
    """The callback path of one proxy route; see the module docstring for when it applies."""

    __slots__ = ("gates", "route_id", "target")

    def __init__(self, route_id: str, target: ProxyTarget, gates: list[Gate] | None = None) -> None:
        self.route_id = route_id
        self.target = target
        self.gates = gates or []  # the route's filters in synchronous form (pipeline.Gate)

    def start(
        self,
        ex: Exchange,
        match: RouteMatch,
        span: TraceParent,
        tp: bytes,
        done: Done,
        fail: Fail,
    ) -> bool:
        """Send ``ex`` upstream and follow it by callbacks; False (nothing done) to decline."""
        if ex.method == b"HEAD" or ex.upgrade is not None or not ex.body.complete or ex.body.received:
            return False
        if incoming_budget(ex.headers) is not None:
            return False  # the task path applies the caller's deadline (and rejects a spent one)
        cluster = self.target.cluster
        try:
            ep = cluster.pick()
        except NoInstanceAvailable:
            return False  # the task path answers 503
        # The filters run after the instance is chosen: once a gate admitted, it has changed the
        # request (scrubbed identity headers, for one), so from here on nothing declines. A
        # declining or refusing gate costs the balancer one choice (the task path chooses again).
        if self.gates:
            ctx = RequestContext(ex, match, span, tp)
            try:
                for gate in self.gates:
                    if not gate(ctx):
                        return False  # it needs awaiting (a key fetch): the task path runs it
            except Rejection:
                return False  # the task path refuses it again, and answers and counts it
        path = rewrite_path(match).encode()
        if ex.query:
            path += b"?" + ex.query
        timeouts = cluster.timeouts
        conn = ep.pool.take_idle()
        transport = conn.transport if conn is not None else None
        if conn is not None and (transport is None or transport.is_closing()):
            ep.pool.release(conn)  # not reusable: closed and counted out
            conn = None
        now = ex.loop_time()
        deadline = now + timeouts.total
        flight = ProxyFlight(self, ex, conn, ep, path, span, tp, deadline, done, fail)
        if conn is None or transport is None:
            # Connecting (or waiting for a free connection) needs awaiting.
            ex.continue_in_task(flight.attempt_in_task())
            return True
        head = request_head(ex, self.target, path, ep, tp, timeouts.total)
        ex.log["upstream"] = ep.label
        ep.outstanding += 1
        conn.begin(head_request=False, listener=flight)
        transport.write(head)
        conn.request_sent = True
        first_byte = now + timeouts.first_byte
        if first_byte < deadline:
            conn.set_deadline(first_byte, "first_byte", timeouts.first_byte)
        else:
            conn.set_deadline(deadline, "total", timeouts.total)
        ex.on_lost = flight.client_lost
        return True


class ProxyFlight:
    """One request on the callback path, from the request written to the connection returned."""

    __slots__ = ("conn", "deadline", "done", "ep", "ex", "fail", "over", "path", "proxy", "span", "tp")

    def __init__(
        self,
        proxy: FastProxy,
        ex: Exchange,
        conn: UpstreamConnection | None,
        ep: Endpoint,
        path: bytes,
        span: TraceParent,
        tp: bytes,
        deadline: float,
        done: Done,
        fail: Fail,
    ) -> None:
        self.proxy = proxy
        self.ex = ex
        self.conn = conn  # None: the attempt runs in a task (attempt_in_task)
        self.ep = ep
        self.path = path
        self.span = span
        self.tp = tp
        self.deadline = deadline
        self.done = done
        self.fail = fail
        self.over = False

    # -- UpstreamListener ------------------------------------------------------------------
    def upstream_data(self, conn: UpstreamConnection) -> None:
        head = conn.head
        if head is None or self.over:
            return  # a partial head (or a 1xx): wait for more
        conn.listener = None
        ex = self.ex
        # (A 101 never gets here: the connection refuses one that no upgrade asked for.)
        if not conn.response_complete:
            # The body is still coming: stream it from a task, with flow control.
            conn.set_deadline(self.deadline, "total", self.proxy.target.cluster.timeouts.total)
            ex.continue_in_task(self._stream())
            return
        conn.clear_deadline()
        ex.respond(
            head.status, response_headers(ex, head, self.proxy.target, self.tp), conn.body.read_nowait()
        )
        self._end()
        ex.handler_done()

    def upstream_failed(self, exc: Exception) -> None:
        conn = self.conn
        if self.over or conn is None:
            return
        conn.listener = None
        ex = self.ex
        if (
            isinstance(exc, UpstreamReset)
            and not conn.got_bytes
            and ex.method in IDEMPOTENT
            and ex.state is ResponseState.PENDING
        ):
            # A pooled connection the upstream closed while it was idle: the request never
            # reached the application. The task's attempt retries on a fresh connection.
            self._release()
            ex.continue_in_task(self.attempt_in_task())
            return
        if isinstance(exc, HttpError) and ex.state is ResponseState.PENDING:
            ex.close_after = ex.close_after or not ex.body.complete
            self.fail(ex, exc, self.tp)
        else:
            ex.abort()
        self._end()
        ex.handler_done()

    # -- the client ------------------------------------------------------------------------
    def client_lost(self) -> None:
        """The client closed its connection while the upstream was still answering."""
        if self.over or self.conn is None:
            return
        self.conn.listener = None
        self.ex.status = self.ex.status or 499
        self._end()

    # -- helpers ---------------------------------------------------------------------------
    async def attempt_in_task(self) -> None:
        """The proxy action's attempt on the chosen instance, with the gateway's error handling."""
        self.over = True
        ex = self.ex
        try:
            await attempt(ex, self.proxy.target, self.path, self.tp, self.ep, self.deadline, None)
        except HttpError as exc:
            if ex.state is ResponseState.PENDING:
                self.fail(ex, exc, self.tp)
            else:
                ex.abort()
        except asyncio.CancelledError:
            ex.status = ex.status or 499
            raise
        finally:
            self.done(ex, self.proxy.route_id, self.span)

    async def _stream(self) -> None:
        ex = self.ex
        conn = self.conn
        assert conn is not None
        head = conn.head
        assert head is not None
        try:
            await respond_upstream(ex, self.proxy.target, conn, head, self.tp)
        except HttpError as exc:
            if ex.state is ResponseState.PENDING:
                self.fail(ex, exc, self.tp)
            else:
                ex.abort()  # the response has started: cut it rather than send a short body
        except asyncio.CancelledError:
            ex.status = ex.status or 499
            raise
        finally:
            self._end()

    def _release(self) -> None:
        """Return the connection (pooled only if clean)."""
        self.over = True
        conn = self.conn
        assert conn is not None
        conn.clear_deadline()
        self.ep.pool.release(conn)
        self.ep.outstanding -= 1

    def _end(self) -> None:
        """Return the connection and do the gateway's bookkeeping (inflight, access log)."""
        self._release()
        self.done(self.ex, self.proxy.route_id, self.span)


def build_fast_proxy(route: Route, env: GatewayEnv, gates: list[Gate] | None = None) -> FastProxy | None:
    """The callback path of a proxy route whose filters are ``gates``, or None when the route
    needs the task path always (a resilience policy: admission, retries and breakers await)."""
    assert route.id is not None
    assert route.proxy is not None
    target = proxy_target(route, env)
    if target.guard is not None:
        return None
    return FastProxy(route.id, target, gates)
