"""One upstream exchange: the one object every call from the gateway to a service goes through.

The proxy (in both of its modes: answered from callbacks, or streamed in a task), the calls of
aggregate endpoints and the service clients of Python endpoints each make one
:class:`UpstreamCall` per exchange. It holds what the exchange is (the service's cluster and
guard, the request it renders per attempt, its trace context, its deadline) and where it stands
(the instance of the current attempt, how many attempts, its connection), and it is the one
place that

- admits the exchange to a guarded service (its ``concurrency`` bound, then its breaker; a
  refusal is a :class:`~edgeway.gateway.upstream.resilient.Refused` error, never sent);
- picks the instance (the guard's choice among those not tried yet, else the balancer's);
- writes the request on an idle pooled connection at once, without a task, or connects (or
  waits for a free connection) in a task;
- retries a pooled connection the service closed while idle, once, on a fresh connection, for
  idempotent methods (:data:`~edgeway.resilience.retry.IDEMPOTENT_METHODS`), guarded or not;
- asks the guard whether a failed attempt, or an answer with a status the service retries on,
  goes to another instance (within the retry budget and the deadline), and tells it each
  attempt's outcome and the exchange's end;
- arms the deadlines on the connection (fired by its pool's ticker): ``first_byte`` from the
  request write to the response head, ``total`` for the whole exchange, every attempt included;
  each attempt carries the time left in ``X-Edgeway-Deadline-Ms``.

What the caller does with the answer is its own: the proxy streams it to the client (its
subclass, :class:`edgeway.gateway.actions.proxy.ProxyCall`, also follows it from callbacks),
aggregate calls and Python endpoints read it whole (:meth:`UpstreamCall.reply`). Whatever ends
a proxied request is answered by the runtime's one error rule (``Gateway._fail``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from mypy_extensions import mypyc_attr

from edgeway.gateway.telemetry.meters import CallTracing, ServiceMeter
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.resilient import (
    CircuitOpen,
    NoInstance,
    Refused,
    ServiceOverloaded,
)
from edgeway.http.errors import (
    InstanceDown,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamReset,
    UpstreamTimeout,
)
from edgeway.http.upstream import ResponseHead, UpstreamConnection
from edgeway.resilience.errors import NoInstanceAvailable, Overloaded
from edgeway.resilience.guard import InstanceState, ServiceGuard
from edgeway.resilience.retry import IDEMPOTENT_METHODS

DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
_IDEMPOTENT: Final = IDEMPOTENT_METHODS  # a C static in the compiled build
_DEADLINE_LINE: Final = b"x-edgeway-deadline-ms: %d\r\n"


class ResponseTooLarge(UpstreamError):
    """The response body passed the caller's limit (502)."""

    status = 502


class ServiceReply:
    """A service's complete answer."""

    __slots__ = ("body", "headers", "instance", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, instance: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.instance = instance  # host:port that answered

    def __repr__(self) -> str:
        return f"<ServiceReply {self.status} from {self.instance}>"

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header by lower-case name."""
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None


class CallLimits:
    """The time and size limits of one call, worked out once per configured call."""

    __slots__ = ("connect", "first_byte", "max_body", "total")

    def __init__(self, total: float, first_byte: float, connect: float, max_body: int) -> None:
        self.total = total  # the whole call, every attempt included
        self.first_byte = first_byte  # from an attempt's request write to its response head
        self.connect = connect
        self.max_body = max_body

    @classmethod
    def of(
        cls, cluster: Cluster, timeout: float | None = None, max_body: int = DEFAULT_MAX_BODY
    ) -> CallLimits:
        """The service's timeouts; a call ``timeout`` replaces ``total`` and caps the others."""
        limits = cluster.timeouts
        total = timeout if timeout is not None else limits.total
        return cls(total, min(limits.first_byte, total), min(limits.connect, total), max_body)


# Compiled builds (mypyc) refuse Python subclasses of compiled classes unless allowed: the gRPC
# proxy's call (edgeway.gateway.grpc.proxy.H2Call, interpreted) is one.
@mypyc_attr(allow_interpreted_subclasses=True)
class UpstreamCall:
    """One exchange with a service, every attempt included; see the module docstring.

    The request is rendered per attempt as ``line + authority + CRLF + middle + deadline line +
    tail``. Every call that was admitted must end in :meth:`finish` (:meth:`reply` and
    :meth:`close` do it), which gives its connection and its concurrency slot back and tells
    the guard.
    """

    __slots__ = (
        "began",
        "cluster",
        "conn",
        "count",
        "end",
        "ep",
        "error",
        "finished",
        "guard",
        "head_request",
        "limits",
        "line",
        "loop",
        "meter",
        "method",
        "middle",
        "request",
        "retried",
        "reused",
        "sent_at",
        "state",
        "stopped",
        "streamed_body",
        "tail",
        "task",
        "trace",
        "tried",
        "until",
    )

    def __init__(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        method: bytes,
        limits: CallLimits,
        loop: asyncio.AbstractEventLoop,
        now: float,
        deadline: float | None = None,
        end: float | None = None,
    ) -> None:
        self.cluster = cluster
        self.guard = guard
        self.method = method
        self.limits = limits
        self.loop = loop
        self.sent_at = now  # the current attempt's start
        self.began = now
        # When the ``total`` deadline fires: the call's own budget, every attempt included.
        self.end = call_end = end if end is not None else now + limits.total
        # What retries and the deadline header may use: the call's budget, or the caller's
        # deadline when that comes first.
        self.until = deadline if deadline is not None and deadline < call_end else call_end
        self.head_request = method == b"HEAD"
        # The request a client streams through (the proxy) is not repeatable unless empty; a
        # call's own body is held whole in ``tail`` and can be sent again.
        self.streamed_body = False
        self.line = b""
        self.middle = b""
        self.tail = b""
        self.request = b""
        self.count = 0  # attempts so far
        # The instances of every attempt so far, for the guard's choice of another one; an
        # unguarded call never retries elsewhere and keeps only the count.
        self.tried: list[Endpoint] | None = [] if guard is not None else None
        self.state: InstanceState[Endpoint] | None = None  # the guard's view of the current one
        self.ep: Endpoint | None = None
        self.conn: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.reused = False
        self.retried = False  # the stale-connection retry was used
        self.finished = False
        self.stopped = False  # failed from outside (a deadline) or closed: no further attempt
        # Telemetry (edgeway.gateway.telemetry): the service's meter (None: metrics off), the
        # call's spans (None: tracing off, or the request is not sampled).
        self.meter: ServiceMeter | None = None
        self.trace: CallTracing | None = None

    def __repr__(self) -> str:
        state = "finished" if self.finished else "failed" if self.error else "in flight"
        return f"<{type(self).__name__} {self.cluster.name} {state}>"

    @property
    def instance(self) -> str:
        return self.ep.label if self.ep is not None else ""

    @property
    def attempts(self) -> int:
        return self.count

    # -- admission and the choice of instance ----------------------------------------------
    def admit(self) -> bool:
        """Admit the call to its service's guard: its concurrency bound, then its breaker.
        Synchronous, so the common case costs no coroutine; False when the call must wait for
        a concurrency slot (then :meth:`wait_admission`). Raises :class:`CircuitOpen`."""
        guard = self.guard
        if guard is None:
            return True
        limiter = guard.limiter
        if limiter is not None and not limiter.try_acquire():
            return False
        self._admitted(guard)
        return True

    async def wait_admission(self) -> None:
        """Admit a call that waits for a concurrency slot; :class:`ServiceOverloaded` when the
        queue is full or the wait too long, :class:`CircuitOpen` when the breaker refuses."""
        guard = self.guard
        assert guard is not None  # admit() defers only with a limiter
        assert guard.limiter is not None
        try:
            await guard.limiter.acquire()
        except Overloaded as exc:
            guard.telemetry.shed()
            refusal = ServiceOverloaded(
                f"service {self.cluster.name!r} is at its concurrency limit: {exc}", exc.retry_after
            )
            if self.meter is not None or self.trace is not None:
                self.observe_end(refusal)
            raise refusal from None
        self._admitted(guard)

    def _admitted(self, guard: ServiceGuard[Endpoint]) -> None:
        breaker = guard.breaker
        if breaker is not None and not breaker.allow():
            if guard.limiter is not None:
                guard.limiter.release()
            self.finished = True  # refused: nothing to finish
            refusal = CircuitOpen(
                f"the circuit breaker of service {self.cluster.name!r} is open", breaker.retry_after
            )
            if self.meter is not None or self.trace is not None:
                self.observe_end(refusal)
            raise refusal
        if guard.budget is not None:
            guard.budget.record_request()

    def pick(self) -> Endpoint:
        """The instance for the next attempt; :class:`NoInstance` when none is available."""
        guard = self.guard
        if guard is None:
            try:
                ep = self.cluster.pick()
            except NoInstanceAvailable:
                raise NoInstance(f"no available instance of service {self.cluster.name!r}") from None
        else:
            tried = self.tried
            assert tried is not None  # a guarded call keeps them
            try:
                state = guard.pick(self.cluster.balancer, tried)
            except NoInstanceAvailable:
                raise NoInstance(
                    f"no available instance of service {self.cluster.name!r}", guard.retry_after_hint()
                ) from None
            self.state = state
            ep = state.member
            tried.append(ep)
        self.count += 1
        return ep

    # -- sending ---------------------------------------------------------------------------
    def render(self, ep: Endpoint) -> bytes:
        """The request for an attempt on ``ep``: its authority, and the time left."""
        budget_ms = int((self.until - self.sent_at) * 1000)
        trace = self.trace
        return b"".join(
            (
                self.line,
                ep.authority,
                b"\r\n",
                self.middle,
                _DEADLINE_LINE % (budget_ms if budget_ms > 0 else 1),
                b"" if trace is None else b"traceparent: " + trace.attempt(self, ep) + b"\r\n",
                self.tail,
            )
        )

    def attempt(self, ep: Endpoint) -> None:
        """Start an attempt on ``ep``: on an idle connection now, or in a task that connects."""
        self.ep = ep
        ep.outstanding += 1
        self.request = self.render(ep)
        conn = ep.pool.take_idle()
        if conn is not None:
            self.send(conn, reused=True)
        else:
            self.task = self.loop.create_task(self._open_and_send(fresh=False))

    def begin(self, conn: UpstreamConnection) -> None:
        """Prepare ``conn`` for this exchange (a subclass follows it from callbacks)."""
        conn.begin(head_request=self.head_request)

    def send(self, conn: UpstreamConnection, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        self.begin(conn)
        try:
            conn.write(self.request)
        except UpstreamReset as exc:
            self.error = exc
            return
        self.sent(conn)

    def sent(self, conn: UpstreamConnection) -> None:
        """The request head is written: the body follows (a subclass streams one) and the
        first-byte deadline runs."""
        conn.request_sent = True
        self.arm_first_byte(conn)

    def arm_first_byte(self, conn: UpstreamConnection) -> None:
        limits = self.limits
        first_byte = self.sent_at + limits.first_byte
        if first_byte < self.end:
            conn.set_deadline(first_byte, "first_byte", limits.first_byte)
        else:
            conn.set_deadline(self.end, "total", limits.total)

    async def admit_and_send(self) -> None:
        """A call that had to wait for a concurrency slot: admitted, then sent."""
        await self.wait_admission()
        ep = self.pick()
        self.sent_at = self.loop.time()
        self.ep = ep
        ep.outstanding += 1
        self.request = self.render(ep)
        conn = ep.pool.take_idle()
        if conn is not None:
            self.send(conn, reused=True)
        else:
            await self._open_and_send(fresh=False)

    async def _open_and_send(self, fresh: bool) -> None:
        ep = self.ep
        assert ep is not None
        conn, reused = await ep.pool.acquire(self.limits.connect, fresh=fresh)
        if self.finished or self.stopped:  # closed, or failed, while we were connecting
            ep.pool.release(conn)
            return
        self.send(conn, reused)

    # -- the response head, every attempt included ----------------------------------------
    async def response_head(self) -> tuple[UpstreamConnection, ResponseHead]:
        """Wait for the final answer's head: a stale pooled connection is retried once, a
        failed attempt or a status the service retries on goes to another instance when its
        guard allows. Raises the :class:`UpstreamError` of the last attempt."""
        while True:
            try:
                # The steady state (request written on a pooled connection) awaits the head
                # right here: no nested coroutine per call.
                try:
                    if self.task is not None or self.error is not None:
                        # A write that failed on a pooled connection is a stale connection
                        # too: retried below like one that was reset before answering.
                        await self._written()
                    conn = self.conn
                    assert conn is not None
                    head = await self.wait_head(conn)
                except UpstreamReset as exc:
                    conn, head = await self._retry_stale(self.conn, exc)
            except UpstreamError as exc:
                if self.guard is not None and await self._again_after_error(exc):
                    continue
                raise
            guard = self.guard
            if (
                guard is not None
                and head.status in guard.retry_on
                and await self._again_after_status(head.status)
            ):
                continue
            return conn, head

    async def wait_head(self, conn: UpstreamConnection) -> ResponseHead:
        """The head of this attempt's answer (a subclass also watches the body it streams)."""
        return await conn.head_waiter()

    async def _retry_stale(
        self, conn: UpstreamConnection | None, exc: UpstreamReset
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """A pooled connection the service closed while idle never reached it: one retry on a
        fresh connection, for idempotent methods."""
        if not self.stale_retry_allowed(conn):
            raise exc
        self.retried = True
        if self.meter is not None:
            self.meter.retried()
        self.error = None
        self.drop_connection()
        await self._open_and_send(fresh=True)
        await self._written()
        fresh = self.conn
        assert fresh is not None
        return fresh, await self.wait_head(fresh)

    def stale_retry_allowed(self, conn: UpstreamConnection | None) -> bool:
        stale = conn is None or not conn.got_bytes
        return (
            self.reused
            and stale
            and self.idempotent
            and not self.streamed_body
            and not self.retried
            and not self.stopped
        )

    @property
    def idempotent(self) -> bool:
        # Asked only when an attempt failed: hashing the parsed method for the set lookup on
        # every call would cost the common request ~200 instructions for nothing.
        return self.method in _IDEMPOTENT

    @property
    def repeatable(self) -> bool:
        """Idempotent, and its body (if any) can be sent again: what the client could have done
        itself."""
        return self.idempotent and not self.streamed_body

    def retry_after_error(self, exc: UpstreamError) -> float | None:
        """Backoff before a retry of an attempt that failed with ``exc``, or None for no retry."""
        guard = self.guard
        if guard is None or self.stopped or isinstance(exc, Refused):
            return None
        never_sent = (
            isinstance(exc, UpstreamConnectError | PoolTimeout)
            or (isinstance(exc, UpstreamTimeout) and exc.phase == "connect")
            or (isinstance(exc, InstanceDown) and not exc.sent)
        )
        if not (never_sent or self.repeatable):
            return None
        assert self.tried is not None  # guarded
        return guard.retry_delay(self.count - 1, self.until - self.loop.time(), self.tried, "error")

    def retry_after_status(self, status: int) -> float | None:
        """Backoff before a retry of an attempt answered with ``status`` (not yet sent on)."""
        guard = self.guard
        if guard is None or self.stopped or status not in guard.retry_on or not self.repeatable:
            return None
        assert self.tried is not None  # guarded
        return guard.retry_delay(self.count - 1, self.until - self.loop.time(), self.tried, "status")

    async def _again_after_error(self, exc: UpstreamError) -> bool:
        delay = self.retry_after_error(exc)
        if delay is None:
            return False
        self.attempt_over(exc, self.loop.time())
        self.report(exc)
        await self._next_attempt(delay)
        return True

    async def _again_after_status(self, status: int) -> bool:
        delay = self.retry_after_status(status)
        if delay is None:
            return False
        self.attempt_over(status, self.loop.time())
        self.report(status)
        await self._next_attempt(delay)
        return True

    async def _next_attempt(self, delay: float) -> None:
        self.drop_attempt()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.stopped:  # the deadline passed while backing off
            assert self.error is not None
            raise self.error
        self.error = None
        self.retried = False
        ep = self.pick()
        self.sent_at = self.loop.time()
        self.attempt(ep)

    async def _written(self) -> None:
        """Wait until the request is written (only a call that had to connect waits)."""
        while (task := self.task) is not None:
            # (No try/finally here: mypyc cannot compile a break inside one.)
            try:
                await task
            except asyncio.CancelledError:
                if self.task is task:
                    self.task = None
                if self.error is None:
                    raise
                break
            except BaseException:
                if self.task is task:
                    self.task = None
                raise
            if self.task is task:
                self.task = None
        if self.error is not None:
            raise self.error

    # -- reading a whole answer (aggregate calls, Python endpoints) --------------------------
    @property
    def answered(self) -> bool:
        """True once :meth:`reply` can go on without waiting for the service's head: it has
        arrived, or the call has failed."""
        if self.error is not None:
            return True
        if self.task is not None and not self.task.done():
            return False
        return self.conn is None or self.conn.head_waiter().done()

    def on_answer(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the call becomes :attr:`answered`."""
        if self.answered:
            self.loop.call_soon(callback)
        elif self.task is not None and not self.task.done():
            self.task.add_done_callback(lambda _: self.on_answer(callback))
        else:
            assert self.conn is not None
            self.conn.head_waiter().add_done_callback(lambda _: callback())

    @property
    def complete(self) -> bool:
        """True once the service's whole answer (head and body) has arrived: :meth:`reply` can
        take it without waiting, and nothing can fail it any more."""
        conn = self.conn
        return (
            conn is not None
            and self.error is None
            and conn.response_complete
            and (self.task is None or self.task.done())
        )

    @property
    def failed(self) -> bool:
        """True once it is certain, before :meth:`reply`, that the call has failed: it got no
        answer, or an error status, and will make no further attempt. False while that is not
        known (no answer yet, or one a retry may still replace: a guarded call says False
        unless its guard refused it)."""
        if isinstance(self.error, Refused):
            return True
        if self.guard is not None:
            return False
        if self.error is not None:
            return True
        task = self.task
        if task is not None:
            if not task.done():
                return False
            if task.cancelled() or task.exception() is not None:
                return True
        conn = self.conn
        if conn is None:
            return False
        head = conn.head_waiter()
        if not head.done():
            return False
        exc = head.exception()
        if exc is not None:
            return not (isinstance(exc, UpstreamReset) and self.stale_retry_allowed(conn))
        return not 200 <= head.result().status < 300

    async def reply(self) -> ServiceReply:
        """The complete answer; raises an :class:`UpstreamError` when there is none."""
        outcome: int | BaseException = 0  # for the guard: the answer's status, or what failed
        try:
            conn, head = await self.response_head()
            conn.clear_deadline()
            limit = self.limits.max_body
            declared = head.content_length
            if declared is not None and declared > limit:
                # Refused before a byte of it is read; the connection, mid-response, is closed.
                outcome = head.status
                raise self._too_large(conn, declared)
            body = conn.body
            data = body.read_nowait() if body.complete else await self._read_body(conn)
            outcome = head.status  # the instance answered, whatever the caller makes of it
            if len(data) > limit:
                raise self._too_large(conn)
            return ServiceReply(head.status, head.headers, data, conn.instance)
        except BaseException as exc:
            # A call the endpoint gave up on (its deadline passed, it was abandoned) says
            # nothing about the service: its own timeouts are what judge it.
            if outcome == 0 and not self.stopped:
                outcome = exc
            raise
        finally:
            self.finish(outcome)

    async def _read_body(self, conn: UpstreamConnection) -> bytes:
        """The rest of the body; past the size limit the call is refused at once (never a
        truncated body: a cut JSON document, or a valid one followed by padding, must not pass
        for the answer), and the connection, mid-response, is closed when it is given back."""
        conn.set_deadline(self.end, "total", self.limits.total)
        limit = self.limits.max_body
        body = conn.body
        parts = [body.read_nowait()]
        size = len(parts[0])
        while size <= limit and (chunk := await body.read()):
            size += len(chunk)
            parts.append(chunk)
        if size > limit:
            raise self._too_large(conn)
        return b"".join(parts)

    def _too_large(self, conn: UpstreamConnection, declared: int | None = None) -> ResponseTooLarge:
        limit = self.limits.max_body
        what = f"declared a {declared}-byte answer" if declared is not None else "answered more"
        return ResponseTooLarge(
            f"{conn.instance} {what}; a call may return {limit} bytes", instance=conn.instance
        )

    # -- ending ----------------------------------------------------------------------------
    def fail(self, exc: UpstreamError) -> None:
        """End the call with ``exc`` (an endpoint deadline): its reply raises it, and it makes
        no further attempt. A call whose whole answer is already in keeps it: a deadline (or an
        abandoned run) cannot take back what arrived in time, whenever its reply is taken."""
        if self.finished or self.stopped:
            return
        self.stopped = True
        if self.complete:
            return
        self.error = exc
        if self.task is not None and not self.task.done():
            self.task.cancel()
        elif self.conn is not None:
            self.conn.fail(exc)

    def close(self) -> None:
        """Give up on the call without awaiting it (the client went away, or a required call
        failed): it says nothing about the service."""
        if self.finished:
            return
        self.fail(UpstreamReset("the call was abandoned", instance=self.instance))
        task = self.task
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: nobody will await it
        self.finish(0)

    def drop_connection(self) -> None:
        """Give the current connection back (pooled only if clean, else closed)."""
        conn = self.conn
        if conn is not None:
            conn.clear_deadline()
            if self.ep is not None:
                self.ep.pool.release(conn)
            self.conn = None

    def drop_attempt(self) -> None:
        """The current attempt is over: its connection goes back (closed when it cannot be
        reused), its instance has one call fewer in flight."""
        self.drop_connection()
        task = self.task
        if task is not None:
            self.task = None
            if not task.done():
                task.cancel()
        if self.ep is not None:
            self.ep.outstanding -= 1
            self.ep = None

    def attempt_over(self, outcome: int | BaseException, now: float) -> None:
        """Telemetry of the attempt that just ended (``now``: loop time): its instance's meter,
        its span."""
        meter = self.meter
        ep = self.ep
        if meter is not None and ep is not None:
            meter.attempt(ep.label, outcome, now - self.sent_at)
        trace = self.trace
        if trace is not None:
            trace.attempt_over(outcome)

    def observe_end(self, outcome: int | BaseException) -> None:
        """Telemetry of the whole call, its last attempt first; once (a refusal is observed
        where it happens, and the call may still be finished after it)."""
        now = self.loop.time()
        if self.ep is not None:
            self.attempt_over(outcome, now)
        meter = self.meter
        if meter is not None:
            self.meter = None
            meter.call(outcome, now - self.began)
        trace = self.trace
        if trace is not None:
            self.trace = None
            trace.call_over(outcome)

    def report(self, outcome: int | BaseException) -> None:
        """The outcome of the current attempt for the guard: a status, or the exception that
        ended it. An exception other than an upstream error (the client went away, a body too
        large) says nothing about the instance."""
        state = self.state
        if state is not None:
            self.state = None
            guard = self.guard
            assert guard is not None
            if isinstance(outcome, int):
                guard.report(state, outcome, False)
            else:
                guard.report(state, 0, isinstance(outcome, UpstreamError))

    def finish(self, outcome: int | BaseException) -> None:
        """The exchange is over: ``outcome`` is the status answered (0 if none) or what ended
        it. The connection goes back, the guard hears of the last attempt and of the end."""
        if self.finished:
            return
        self.finished = True
        if self.meter is not None or self.trace is not None:
            self.observe_end(outcome)
        self.drop_attempt()
        guard = self.guard
        if guard is not None:
            self.report(outcome)
            if guard.limiter is not None:
                guard.limiter.release()
            if isinstance(outcome, int):
                guard.finish(outcome, False)
            else:
                # A refusal (no instance left for a retry) says nothing about the service.
                guard.finish(0, False if isinstance(outcome, Refused) else isinstance(outcome, UpstreamError))
