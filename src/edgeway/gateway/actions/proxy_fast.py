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

from collections.abc import Awaitable

from edgeway.gateway.actions.proxy import (
    ProxyTarget,
    attempt,
    build_proxy,
    proxy_target,
    request_head,
    respond_upstream,
    response_headers,
)
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.core.pipeline import Action, GatewayEnv, Held
from edgeway.gateway.core.router import rewrite_path
from edgeway.gateway.upstream.clusters import Endpoint
from edgeway.http.errors import UpstreamReset
from edgeway.http.exchange import ResponseState
from edgeway.http.upstream import UpstreamConnection
from edgeway.resilience.balancer import NoInstanceAvailable
from edgeway.resilience.deadline import incoming_budget
from edgeway.resilience.retry import IDEMPOTENT_METHODS


class FastProxy:
    """The callback path of one proxy route; see the module docstring for when it applies."""

    __slots__ = ("target", "task")

    def __init__(self, target: ProxyTarget, task: Action) -> None:
        self.target = target
        self.task = task  # the route's proxy action, for what needs a task

    def start(self, ctx: RequestContext, held: Held) -> Awaitable[None] | None:
        """Send the request upstream and follow it by callbacks (None), or the awaitable that
        proxies it in a task."""
        ex = ctx.ex
        if ex.method == b"HEAD" or ex.upgrade is not None or not ex.body.complete or ex.body.received:
            return self.task(ctx)
        if incoming_budget(ex.headers) is not None:
            return self.task(ctx)  # the task path applies the caller's deadline (and rejects a spent one)
        cluster = self.target.cluster
        try:
            ep = cluster.pick()
        except NoInstanceAvailable:
            return self.task(ctx)  # the task path answers 503
        path = rewrite_path(ctx.match).encode()
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
        flight = ProxyFlight(self, ctx, held, conn, ep, path, deadline)
        if conn is None or transport is None:
            # Connecting (or waiting for a free connection) needs awaiting.
            return flight.attempt_in_task()
        head = request_head(ex, self.target, path, ep, ctx.traceparent, timeouts.total)
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
        ex.watch_client(flight.client_lost)
        return None


class ProxyFlight:
    """One request on the callback path, from the request written to the connection returned."""

    __slots__ = ("conn", "ctx", "deadline", "ep", "held", "over", "path", "proxy")

    def __init__(
        self,
        proxy: FastProxy,
        ctx: RequestContext,
        held: Held,
        conn: UpstreamConnection | None,
        ep: Endpoint,
        path: bytes,
        deadline: float,
    ) -> None:
        self.proxy = proxy
        self.ctx = ctx
        self.held = held
        self.conn = conn  # None: the attempt runs in a task (attempt_in_task)
        self.ep = ep
        self.path = path
        self.deadline = deadline
        self.over = False

    # -- UpstreamListener ------------------------------------------------------------------
    def upstream_data(self, conn: UpstreamConnection) -> None:
        head = conn.head
        if head is None or self.over:
            return  # a partial head (or a 1xx): wait for more
        conn.listener = None
        ctx = self.ctx
        ex = ctx.ex
        # (A 101 never gets here: the connection refuses one that no upgrade asked for.)
        if not conn.response_complete:
            # The body is still coming: stream it from a task, with flow control.
            conn.set_deadline(self.deadline, "total", self.proxy.target.cluster.timeouts.total)
            self.held.in_task(ctx, self._stream())
            return
        conn.clear_deadline()
        ex.respond(
            head.status,
            response_headers(ex, head, self.proxy.target, ctx.traceparent),
            conn.body.read_nowait(),
        )
        self._release()
        self.held.finish(ctx, None)

    def upstream_failed(self, exc: Exception) -> None:
        conn = self.conn
        if self.over or conn is None:
            return
        conn.listener = None
        ex = self.ctx.ex
        if (
            isinstance(exc, UpstreamReset)
            and not conn.got_bytes
            and ex.method in IDEMPOTENT_METHODS
            and ex.state is ResponseState.PENDING
        ):
            # A pooled connection the upstream closed while it was idle: the request never
            # reached the application. The task's attempt retries on a fresh connection.
            self._release()
            self.held.in_task(self.ctx, self.attempt_in_task())
            return
        self._release()
        self.held.finish(self.ctx, exc)

    # -- the client ------------------------------------------------------------------------
    def client_lost(self) -> None:
        """The client closed its connection while the upstream was still answering."""
        if self.over or self.conn is None:
            return
        self.conn.listener = None
        ex = self.ctx.ex
        ex.status = ex.status or 499
        self._release()
        self.held.finish(self.ctx, None)

    # -- helpers ---------------------------------------------------------------------------
    async def attempt_in_task(self) -> None:
        """The proxy action's attempt on the chosen instance (the runtime answers what fails)."""
        self.over = True
        ctx = self.ctx
        await attempt(ctx.ex, self.proxy.target, self.path, ctx.traceparent, self.ep, self.deadline, None)

    async def _stream(self) -> None:
        conn = self.conn
        assert conn is not None
        head = conn.head
        assert head is not None
        try:
            await respond_upstream(self.ctx.ex, self.proxy.target, conn, head, self.ctx.traceparent)
        finally:
            self._release()

    def _release(self) -> None:
        """Return the connection (pooled only if clean)."""
        self.over = True
        conn = self.conn
        assert conn is not None
        conn.clear_deadline()
        self.ep.pool.release(conn)
        self.ep.outstanding -= 1


def build_fast_proxy(route: Route, env: GatewayEnv) -> FastProxy | None:
    """The callback path of a proxy route, or None when the route needs the task path always
    (a resilience policy: admission, retries and breakers await)."""
    assert route.proxy is not None
    target = proxy_target(route, env)
    if target.guard is not None:
        return None
    return FastProxy(target, build_proxy(route, env))
