"""Calls from the gateway to a service whose whole (JSON) answer the gateway reads: the engine
under aggregate endpoints and under the clients Python endpoints get.

It runs on the same clusters as the proxy — the service's balancer, its connection pools and its
timeouts — and on edgeway's own upstream protocol, not httpx: an aggregate makes several upstream
exchanges per client request, so their cost decides its throughput.

A call is started synchronously (:func:`start_call`) and its reply awaited later
(:meth:`PendingCall.reply`). When the picked instance has an idle pooled connection — the steady
state — starting writes the request at once, without a task: an aggregate starts all its
independent calls, then awaits them, and they run in parallel without paying for a task each.
Only a call that must open (or wait for) a connection, or wait for a concurrency slot, gets a
task to do that.

A service that configures resilience (:mod:`edgeway.gateway.upstream.resilient`) guards these calls as it
guards proxied requests, with the same guard: admission (the service's ``concurrency`` bound,
its breaker), the choice of instance, retries of idempotent calls within the retry budget, and
each attempt's outcome for the breakers and outlier ejection. A refusal is a
:class:`~edgeway.gateway.upstream.resilient.Refused` error (503), never sent. Retries happen while waiting
for the response head; once a head is taken, the answer is the call's.

Timeouts are deadlines on the connection, fired by its pool's ticker as in the proxy:
``first_byte`` from the request write to the response head, ``total`` for the whole call, all
attempts included; a per-call ``timeout`` replaces the service's ``total``. An endpoint deadline
(``deadline=``, loop time) shortens the budget retries may use and the
``X-Edgeway-Deadline-Ms`` every attempt carries; :meth:`PendingCall.fail` ends a call when it
passes. A pooled connection the service closed while idle is retried once on a fresh one for
idempotent methods, as the proxy does, guarded or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from edgeway.gateway.config.compose_schema import BASE_FORWARD_HEADERS
from edgeway.gateway.config.security_schema import GatewayAuth
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.gateway.upstream.resilient import (
    NoInstance,
    Refused,
    ServiceCall,
    admit_call,
    wait_admission,
)
from edgeway.http.errors import (
    InstanceDown,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from edgeway.http.exchange import Headers
from edgeway.http.headers import reason_phrase
from edgeway.http.outgoing import UnsafeRequest, check_request
from edgeway.http.upstream import ResponseHead, UpstreamConnection
from edgeway.observability.ids import new_span_id
from edgeway.resilience.balancer import NoInstanceAvailable
from edgeway.resilience.guard import ServiceGuard
from edgeway.resilience.retry import IDEMPOTENT_METHODS

_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})
DEFAULT_MAX_BODY = 8 * 1024 * 1024

__all__ = [
    "CallLimits",
    "NoInstance",
    "PendingCall",
    "ResponseTooLarge",
    "ServiceReply",
    "UnsafeRequest",
    "failure_code",
    "start_call",
]


class ResponseTooLarge(UpstreamError):
    """The response body passed the caller's limit (502)."""

    status = 502


class ServiceReply:
    """A service's complete answer."""

    __slots__ = ("body", "headers", "instance", "status")

    def __init__(self, status: int, headers: Headers, body: bytes, instance: str) -> None:
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


def failure_code(exc: UpstreamError) -> str:
    """A short, stable name for why a call got no usable answer (``_meta`` and problems carry it)."""
    if isinstance(exc, Refused):
        return exc.code
    if isinstance(exc, UpstreamTimeout):
        return "deadline" if exc.phase == "deadline" else "timeout"
    if isinstance(exc, UpstreamConnectError):
        return "connect_failed"
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, InstanceDown):
        return "instance_down"
    if isinstance(exc, ResponseTooLarge):
        return "too_large"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol_error"
    return "reset"


class PendingCall:
    """One request to a service in flight; :meth:`reply` waits for the whole answer.

    Every started call must end in :meth:`reply` or :meth:`close` (which gives its connection
    and its concurrency slot back and tells the guard); the aggregate executor guarantees it.
    """

    __slots__ = (
        "_call",
        "_conn",
        "_end",
        "_ep",
        "_error",
        "_finished",
        "_guard",
        "_head_request",
        "_idempotent",
        "_limits",
        "_line",
        "_loop",
        "_request",
        "_retried",
        "_reused",
        "_sent_at",
        "_stopped",
        "_tail",
        "_task",
        "_until",
        "cluster",
    )

    def __init__(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        method: bytes,
        target: bytes,
        headers: bytes,
        body: bytes | None,
        limits: CallLimits,
        loop: asyncio.AbstractEventLoop,
        deadline: float | None,
    ) -> None:
        # Every byte of the request line and headers, whoever built them, is held to what the
        # server accepts from a client: a CR/LF from a value would split the request in two.
        check_request(method, target, headers)
        self.cluster = cluster
        self._guard = guard
        self._loop = loop
        self._sent_at = now = loop.time()  # the current attempt's start
        self._end = end = now + limits.total  # the call's own budget, every attempt included
        # What retries and the deadline header may use: the call's budget, or the endpoint's
        # deadline when that comes first.
        self._until = deadline if deadline is not None and deadline < end else end
        self._limits = limits
        self._idempotent = method in IDEMPOTENT_METHODS
        self._head_request = method == b"HEAD"
        # The request around the per-attempt parts (Host, the deadline header).
        self._line = method + b" " + target + b" HTTP/1.1\r\nhost: "
        if body is not None:
            framing = b"content-length: %d\r\n\r\n" % len(body)
        else:
            framing = b"content-length: 0\r\n\r\n" if method in _WITH_BODY else b"\r\n"
        self._tail = headers + framing + body if body is not None else headers + framing
        self._request = b""
        self._call: ServiceCall | None = None
        self._conn: UpstreamConnection | None = None
        self._ep: Endpoint | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._reused = False
        self._retried = False
        self._finished = False
        self._stopped = False  # failed from outside (a deadline) or closed: no further attempt
        if guard is None:
            try:
                ep = cluster.pick()
            except NoInstanceAvailable:
                self._error = NoInstance(f"no available instance of service {cluster.name!r}")
                return
            self._attempt(ep)
            return
        try:
            call = admit_call(cluster, guard, method)
        except Refused as exc:
            self._error = exc
            return
        if call is None:  # waits for a concurrency slot
            self._task = loop.create_task(self._admit_and_send(guard, method))
            return
        self._call = call
        try:
            ep = call.pick_instance()
        except NoInstance as exc:
            self._error = exc
            return
        self._attempt(ep)

    def __repr__(self) -> str:
        state = "finished" if self._finished else "failed" if self._error else "in flight"
        return f"<PendingCall {self.cluster.name} {state}>"

    @property
    def instance(self) -> str:
        return self._ep.label if self._ep is not None else ""

    # -- sending ---------------------------------------------------------------------------
    def _prepare(self, ep: Endpoint) -> None:
        """Make ``ep`` the current attempt's instance and render the request for it."""
        self._ep = ep
        ep.outstanding += 1
        budget_ms = int((self._until - self._sent_at) * 1000)
        self._request = b"".join(
            (
                self._line,
                ep.authority,
                b"\r\nx-edgeway-deadline-ms: %d\r\n" % (budget_ms if budget_ms > 0 else 1),
                self._tail,
            )
        )

    def _attempt(self, ep: Endpoint) -> None:
        """Send to ``ep`` now on an idle connection, or in a task that connects first."""
        self._prepare(ep)
        conn = ep.pool.take_idle()
        if conn is not None:
            self._send(conn, reused=True)
        else:
            self._task = self._loop.create_task(self._open_and_send(fresh=False))

    def _send(self, conn: UpstreamConnection, reused: bool) -> None:
        self._conn = conn
        self._reused = reused
        conn.begin(head_request=self._head_request)
        try:
            conn.write(self._request)
        except UpstreamReset as exc:
            self._error = exc
            return
        conn.request_sent = True
        first_byte = self._sent_at + self._limits.first_byte
        if first_byte < self._end:
            conn.set_deadline(first_byte, "first_byte", self._limits.first_byte)
        else:
            conn.set_deadline(self._end, "total", self._limits.total)

    async def _open_and_send(self, fresh: bool) -> None:
        assert self._ep is not None
        conn, reused = await self._ep.pool.acquire(self._limits.connect, fresh=fresh)
        if self._finished or self._stopped:  # closed, or failed, while we were connecting
            self._ep.pool.release(conn)
            return
        self._send(conn, reused)

    async def _admit_and_send(self, guard: ServiceGuard[Endpoint], method: bytes) -> None:
        """A call that had to wait for a concurrency slot: admitted, then sent."""
        self._call = call = await wait_admission(self.cluster, guard, method)
        ep = call.pick_instance()
        self._sent_at = self._loop.time()
        self._prepare(ep)
        conn = ep.pool.take_idle()
        if conn is not None:
            self._send(conn, reused=True)
        else:
            await self._open_and_send(fresh=False)

    # -- receiving -------------------------------------------------------------------------
    @property
    def answered(self) -> bool:
        """True once :meth:`reply` can go on without waiting for the service's head: it has
        arrived, or the call has failed."""
        if self._error is not None:
            return True
        if self._task is not None and not self._task.done():
            return False
        return self._conn is None or self._conn.head_waiter().done()

    def on_answer(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the call becomes :attr:`answered`."""
        if self.answered:
            self._loop.call_soon(callback)
        elif self._task is not None and not self._task.done():
            self._task.add_done_callback(lambda _: self.on_answer(callback))
        else:
            assert self._conn is not None
            self._conn.head_waiter().add_done_callback(lambda _: callback())

    @property
    def complete(self) -> bool:
        """True once the service's whole answer (head and body) has arrived: :meth:`reply` can
        take it without waiting, and nothing can fail it any more."""
        conn = self._conn
        return (
            conn is not None
            and self._error is None
            and conn.response_complete
            and (self._task is None or self._task.done())
        )

    @property
    def failed(self) -> bool:
        """True once it is certain, before :meth:`reply`, that the call has failed: it got no
        answer, or an error status, and will make no further attempt. False while that is not
        known (no answer yet, or one a retry may still replace: a guarded call says False
        unless its guard refused it)."""
        if isinstance(self._error, Refused):
            return True
        if self._call is not None or self._guard is not None:
            return False
        if self._error is not None:
            return True
        task = self._task
        if task is not None:
            if not task.done():
                return False
            if task.cancelled() or task.exception() is not None:
                return True
        conn = self._conn
        if conn is None:
            return False
        head = conn.head_waiter()
        if not head.done():
            return False
        exc = head.exception()
        if exc is not None:
            return not (isinstance(exc, UpstreamReset) and self._stale_retry_allowed(conn))
        return not 200 <= head.result().status < 300

    async def reply(self) -> ServiceReply:
        """The complete answer; raises an :class:`UpstreamError` when there is none."""
        outcome: int | BaseException = 0  # for the guard: the answer's status, or what failed
        try:
            while True:
                try:
                    # The steady state (request written on a pooled connection) awaits the head
                    # right here: no nested coroutine per call.
                    if self._task is not None or self._error is not None:
                        await self._sent()
                    conn = self._conn
                    assert conn is not None
                    try:
                        head = await conn.head_waiter()
                    except UpstreamReset as exc:
                        conn, head = await self._retry_stale(conn, exc)
                except UpstreamError as exc:
                    if self._call is not None and await self._again_after_error(self._call, exc):
                        continue
                    raise
                call = self._call
                if (
                    call is not None
                    and head.status in call.guard.retry_on
                    and await self._again_after_status(call, head.status)
                ):
                    continue
                break
            conn.clear_deadline()
            limit = self._limits.max_body
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
            if outcome == 0 and not self._stopped:
                outcome = exc
            raise
        finally:
            self._finish(outcome)

    async def _retry_stale(
        self, conn: UpstreamConnection | None, exc: UpstreamReset
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """A pooled connection the service closed while idle never reached it: one retry on a
        fresh connection, for idempotent methods."""
        if not self._stale_retry_allowed(conn):
            raise exc
        self._retried = True
        self._error = None
        self._drop_connection()
        await self._open_and_send(fresh=True)
        await self._sent()
        fresh = self._conn
        assert fresh is not None
        return fresh, await fresh.head_waiter()

    def _stale_retry_allowed(self, conn: UpstreamConnection | None) -> bool:
        stale = conn is None or not conn.got_bytes
        return self._reused and stale and self._idempotent and not self._retried and not self._stopped

    async def _again_after_error(self, call: ServiceCall, exc: UpstreamError) -> bool:
        """Whether the guard lets a call that failed with ``exc`` go to another instance; if so,
        the next attempt has started."""
        if self._stopped or isinstance(exc, Refused):
            return False
        delay = call.retry_after_error(exc, self._until - self._loop.time())
        if delay is None:
            return False
        call.report(exc)
        await self._next_attempt(call, delay)
        return True

    async def _again_after_status(self, call: ServiceCall, status: int) -> bool:
        """The same for an answer with a status the service retries on (dropped unread)."""
        if self._stopped:
            return False
        delay = call.retry_after_status(status, self._until - self._loop.time())
        if delay is None:
            return False
        call.report(status)
        await self._next_attempt(call, delay)
        return True

    async def _next_attempt(self, call: ServiceCall, delay: float) -> None:
        self._drop_attempt()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._stopped:  # the deadline passed while backing off
            assert self._error is not None
            raise self._error
        self._error = None
        self._retried = False
        ep = call.pick_instance()
        self._sent_at = self._loop.time()
        self._attempt(ep)

    async def _read_body(self, conn: UpstreamConnection) -> bytes:
        """The rest of the body; past the size limit the call is refused at once (never a
        truncated body: a cut JSON document, or a valid one followed by padding, must not pass
        for the answer), and the connection, mid-response, is closed when it is given back."""
        conn.set_deadline(self._end, "total", self._limits.total)
        limit = self._limits.max_body
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
        limit = self._limits.max_body
        what = f"declared a {declared}-byte answer" if declared is not None else "answered more"
        return ResponseTooLarge(
            f"{conn.instance} {what}; a call may return {limit} bytes", instance=conn.instance
        )

    async def _sent(self) -> None:
        """Wait until the request is written (only a call that had to connect, or to wait for
        a concurrency slot, waits)."""
        while (task := self._task) is not None:
            try:
                await task
            except asyncio.CancelledError:
                if self._error is None:
                    raise
                break
            finally:
                if self._task is task:
                    self._task = None
        if self._error is not None:
            raise self._error

    # -- ending ----------------------------------------------------------------------------
    def fail(self, exc: UpstreamError) -> None:
        """End the call with ``exc`` (an endpoint deadline): its reply raises it, and it makes
        no further attempt. A call whose whole answer is already in keeps it: a deadline (or an
        abandoned run) cannot take back what arrived in time, whenever its reply is taken."""
        if self._finished or self._stopped:
            return
        self._stopped = True
        if self.complete:
            return
        self._error = exc
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif self._conn is not None:
            self._conn.fail(exc)

    def close(self) -> None:
        """Give up on the call without awaiting it (the client went away, or a required call
        failed): it says nothing about the service."""
        if self._finished:
            return
        self.fail(UpstreamReset("the call was abandoned", instance=self.instance))
        task = self._task
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: nobody will await it
        self._finish(0)

    def _drop_connection(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.clear_deadline()
            if self._ep is not None:
                self._ep.pool.release(conn)
            self._conn = None

    def _drop_attempt(self) -> None:
        """The current attempt is over: its connection goes back (closed when it cannot be
        reused), its instance has one call fewer in flight."""
        self._drop_connection()
        task = self._task
        if task is not None:
            self._task = None
            if not task.done():
                task.cancel()
        if self._ep is not None:
            self._ep.outstanding -= 1
            self._ep = None

    def _finish(self, outcome: int | BaseException) -> None:
        if self._finished:
            return
        self._finished = True
        self._drop_attempt()
        call = self._call
        if call is not None:
            self._call = None
            call.report(outcome)
            if isinstance(outcome, int):
                call.finish(outcome, None)
            else:
                # A refusal (no instance left for a retry) says nothing about the service.
                call.finish(0, None if isinstance(outcome, Refused) else outcome)


def start_call(
    cluster: Cluster,
    method: bytes,
    target: bytes,
    headers: bytes,
    body: bytes | None = None,
    limits: CallLimits | None = None,
    *,
    guard: ServiceGuard[Endpoint] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    deadline: float | None = None,
) -> PendingCall:
    """Send a request to an instance of ``cluster`` now; await ``.reply()`` for the answer.

    ``target`` is the path and query; ``headers`` a block of ``name: value\\r\\n`` lines (Host,
    the framing and ``X-Edgeway-Deadline-Ms`` are added here). A method, target or header line
    the server would refuse from a client raises :class:`UnsafeRequest`, and nothing is sent.
    ``guard``: the service's, from
    :func:`~edgeway.gateway.upstream.resilient.service_guard`. ``loop``: the running loop, when the caller
    has it at hand (asking for it costs a system call). ``deadline``: loop time the call must be
    over by, when something shorter than its own timeout bounds it.
    """
    return PendingCall(
        cluster,
        guard,
        method,
        target,
        headers,
        body,
        limits or CallLimits.of(cluster),
        loop or asyncio.get_running_loop(),
        deadline,
    )


# -- what every call of a request carries -------------------------------------------------


def common_headers(ctx: RequestContext, forwarding: Forwarding) -> bytes:
    """Header lines every call made for this request carries: the request id, who the client
    is (the forwarding headers, by the proxy's rule: see :mod:`edgeway.gateway.upstream.forwarding`) and
    that JSON is wanted."""
    ex = ctx.ex
    return b"".join(
        (b"x-request-id: ", ex.request_id, b"\r\n", forwarding.lines_for(ex), b"accept: application/json\r\n")
    )


def child_traceparent(ctx: RequestContext) -> bytes:
    """A traceparent line for one call: this request's trace, a new span for the call."""
    span = ctx.span
    return b"traceparent: 00-" + span.trace_id + b"-" + new_span_id() + b"-" + span.flags + b"\r\n"


def forward_names(configured: Sequence[str] | None, auth: GatewayAuth | None) -> frozenset[bytes]:
    """The client headers a call copies: ``configured``, or by default the identity headers the
    auth filter sets (only a gateway with ``auth`` strips clients' copies of them, so without it
    none are forwarded), the bearer token and the caller's language."""
    if configured is None:
        configured = [*BASE_FORWARD_HEADERS, *(auth.headers.names() if auth is not None else ())]
    return frozenset(name.lower().encode() for name in configured)


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]) -> bytes:
    """The client's headers named in ``names`` (lower-case), as header lines."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers if name.lower() in names)


def upstream_problem(status: int, reason: str, body: Any, members: Mapping[str, Any]) -> Rejection:
    """The problem an endpoint answers when a call it needed failed with ``status``.

    A service's 4xx is passed through with the members of its JSON error body (its ``title``
    and ``detail`` included: "order 7 not found" is what the client needs to see); a service's
    5xx becomes 502; the gateway's own statuses (504 timeout, 503 no instance) stay.
    ``members`` are the gateway's (``call``, ``service``, ``code``): they win a name the
    service's body also uses. The body's members are data, never keyword arguments: whatever
    names a service sends (``headers``, ``call``, ``status``) cannot break the answer.
    """
    if 400 <= status < 500 and isinstance(body, dict):
        found = dict(body)
        title = found.pop("title", None)
        detail = found.pop("detail", None)
        if detail is not None and not isinstance(detail, str):
            found["errors"] = detail  # e.g. FastAPI's list of validation errors
        for key in ("status", "request_id"):
            found.pop(key, None)
        found.update(members)
        return Rejection(
            status,
            title if isinstance(title, str) else reason_phrase(status).decode(),
            detail if isinstance(detail, str) else reason,
            members=found,
        )
    return Rejection(status, reason_phrase(status).decode(), reason, members=members)
