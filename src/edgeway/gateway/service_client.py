"""Calls from the gateway to a service whose whole (JSON) answer the gateway reads: the engine
under aggregate endpoints and under the clients Python endpoints get.

It runs on the same clusters as the proxy — the service's balancer, its connection pools and its
timeouts — and on edgeway's own upstream protocol, not httpx: an aggregate makes several upstream
exchanges per client request, so their cost decides its throughput.

A call is started synchronously (:func:`start_call`) and its reply awaited later
(:meth:`PendingCall.reply`). When the picked instance has an idle pooled connection — the steady
state — starting writes the request at once, without a task: an aggregate starts all its
independent calls, then awaits them, and they run in parallel without paying for a task each.
Only a call that must open (or wait for) a connection gets a task to do that.

Timeouts are deadlines on the connection, fired by its pool's ticker as in the proxy:
``first_byte`` from the request write to the response head, ``total`` for the whole exchange; a
per-call ``timeout`` replaces the service's ``total``. :meth:`PendingCall.fail` ends a call
early (an endpoint deadline). A pooled connection the service closed while idle is retried once
on a fresh one for idempotent methods, as the proxy does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeway.gateway.config.compose_schema import BASE_FORWARD_HEADERS
from edgeway.gateway.config.security_schema import GatewayAuth
from edgeway.gateway.errors import Rejection
from edgeway.gateway.pipeline import RequestContext
from edgeway.gateway.upstreams import Cluster, Endpoint
from edgeway.http.errors import UpstreamError, UpstreamReset
from edgeway.http.exchange import Headers
from edgeway.http.headers import reason_phrase
from edgeway.http.upstream import ResponseHead, UpstreamConnection
from edgeway.observability.ids import new_span_id
from edgeway.resilience.balancer import NoInstanceAvailable

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})
DEFAULT_MAX_BODY = 8 * 1024 * 1024


class NoInstance(UpstreamError):
    """Every instance of the service is unavailable (503)."""

    status = 503


class ResponseTooLarge(UpstreamError):
    """The response body passed the caller's limit (502)."""

    status = 502


@dataclass(frozen=True, slots=True)
class ServiceReply:
    """A service's complete answer."""

    status: int
    headers: Headers
    body: bytes
    instance: str  # host:port that answered

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header by lower-case name."""
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None


@dataclass(frozen=True, slots=True)
class CallLimits:
    """The time and size limits of one call, worked out once per configured call."""

    total: float  # the whole exchange
    first_byte: float  # from the request write to the response head
    connect: float
    max_body: int

    @classmethod
    def of(
        cls, cluster: Cluster, timeout: float | None = None, max_body: int = DEFAULT_MAX_BODY
    ) -> CallLimits:
        """The service's timeouts; a call ``timeout`` replaces ``total`` and caps the others."""
        limits = cluster.timeouts
        total = timeout if timeout is not None else limits.total
        return cls(total, min(limits.first_byte, total), min(limits.connect, total), max_body)


class PendingCall:
    """One request to a service in flight; :meth:`reply` waits for the whole answer.

    Every started call must end in :meth:`reply` or :meth:`close` (which gives its connection
    back); the aggregate executor guarantees it.
    """

    __slots__ = (
        "_conn",
        "_ep",
        "_error",
        "_finished",
        "_head_request",
        "_idempotent",
        "_limits",
        "_loop",
        "_request",
        "_retried",
        "_reused",
        "_start",
        "_task",
        "cluster",
    )

    def __init__(
        self,
        cluster: Cluster,
        method: bytes,
        target: bytes,
        headers: bytes,
        body: bytes | None,
        limits: CallLimits,
    ) -> None:
        self.cluster = cluster
        self._loop = loop = asyncio.get_running_loop()
        self._start = loop.time()
        self._limits = limits
        self._request = b""  # the whole request: head and (small, buffered) body
        self._idempotent = method in _IDEMPOTENT
        self._head_request = method == b"HEAD"
        self._conn: UpstreamConnection | None = None
        self._ep: Endpoint | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._reused = False
        self._retried = False
        self._finished = False
        try:
            ep = cluster.pick()
        except NoInstanceAvailable:
            self._error = NoInstance(f"no available instance of service {cluster.name!r}")
            return
        self._ep = ep
        ep.outstanding += 1
        if body is not None:
            framing = b"content-length: %d\r\n\r\n" % len(body)
        else:
            framing = b"content-length: 0\r\n\r\n" if method in _WITH_BODY else b"\r\n"
        self._request = b"".join(
            (
                method,
                b" ",
                target,
                b" HTTP/1.1\r\nhost: ",
                ep.authority,
                b"\r\n",
                headers,
                framing,
                body or b"",
            )
        )
        conn = ep.pool.take_idle()
        if conn is not None:
            self._send(conn, reused=True)
        else:
            self._task = loop.create_task(self._open_and_send(fresh=False))

    def __repr__(self) -> str:
        state = "finished" if self._finished else "failed" if self._error else "in flight"
        return f"<PendingCall {self.cluster.name} {state}>"

    @property
    def instance(self) -> str:
        return self._ep.label if self._ep is not None else ""

    # -- sending ---------------------------------------------------------------------------
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
        limits = self._limits
        phase = "first_byte" if limits.first_byte < limits.total else "total"
        conn.set_deadline(self._start + limits.first_byte, phase, limits.first_byte)

    async def _open_and_send(self, fresh: bool) -> None:
        assert self._ep is not None
        conn, reused = await self._ep.pool.acquire(self._limits.connect, fresh=fresh)
        if self._finished:  # closed while we were connecting
            self._ep.pool.release(conn)
            return
        self._send(conn, reused)

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

    async def reply(self) -> ServiceReply:
        """The complete answer; raises an :class:`UpstreamError` when there is none."""
        try:
            # The steady state (request written on a pooled connection) awaits the head right
            # here: no nested coroutine per call.
            try:
                if self._task is not None or self._error is not None:
                    await self._sent()
                conn = self._conn
                assert conn is not None
                head = await conn.head_waiter()
            except UpstreamReset as exc:
                conn, head = await self._retry(self._conn, exc)
            conn.clear_deadline()
            body = conn.body
            if body.complete:
                data = body.read_nowait()
            else:
                data = await self._read_body(conn)
            if len(data) > self._limits.max_body:
                raise ResponseTooLarge(
                    f"{conn.instance} answered more than {self._limits.max_body} bytes",
                    instance=conn.instance,
                )
            return ServiceReply(head.status, head.headers, data, conn.instance)
        finally:
            self._finish()

    async def _retry(
        self, conn: UpstreamConnection | None, exc: UpstreamReset
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """A pooled connection the service closed while idle never reached it: one retry on a
        fresh connection, for idempotent methods."""
        stale = conn is None or not conn.got_bytes
        if not (self._reused and stale and self._idempotent and not self._retried):
            raise exc
        self._retried = True
        self._error = None
        self._drop_connection()
        await self._open_and_send(fresh=True)
        await self._sent()
        fresh = self._conn
        assert fresh is not None
        return fresh, await fresh.head_waiter()

    async def _read_body(self, conn: UpstreamConnection) -> bytes:
        conn.set_deadline(self._start + self._limits.total, "total", self._limits.total)
        limit = self._limits.max_body
        body = conn.body
        parts = [body.read_nowait()]
        size = len(parts[0])
        while chunk := await body.read():
            size += len(chunk)
            if size > limit:
                break
            parts.append(chunk)
        return b"".join(parts)

    async def _sent(self) -> None:
        """Wait until the request is written (only a call that had to connect waits)."""
        task = self._task
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                if self._error is None:
                    raise
            finally:
                self._task = None
        if self._error is not None:
            raise self._error

    # -- ending ----------------------------------------------------------------------------
    def fail(self, exc: UpstreamError) -> None:
        """End the call with ``exc`` (an endpoint deadline): its reply raises it."""
        if self._finished or self._error is not None:
            return
        self._error = exc
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif self._conn is not None:
            self._conn.fail(exc)

    def close(self) -> None:
        """Give up on the call without awaiting it (the client went away)."""
        if self._finished:
            return
        self.fail(UpstreamReset("the call was abandoned", instance=self.instance))
        task = self._task
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: nobody will await it
        self._finish()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.clear_deadline()
        if self._conn is not None and self._ep is not None:
            self._ep.pool.release(self._conn)
        self._conn = None

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._drop_connection()
        if self._ep is not None:
            self._ep.outstanding -= 1


def start_call(
    cluster: Cluster,
    method: bytes,
    target: bytes,
    headers: bytes,
    body: bytes | None = None,
    limits: CallLimits | None = None,
) -> PendingCall:
    """Send a request to an instance of ``cluster`` now; await ``.reply()`` for the answer.

    ``target`` is the path and query; ``headers`` a block of ``name: value\\r\\n`` lines (Host
    and the framing are added here).
    """
    return PendingCall(cluster, method, target, headers, body, limits or CallLimits.of(cluster))


# -- what every call of a request carries -------------------------------------------------


def common_headers(ctx: RequestContext) -> bytes:
    """Header lines every call made for this request carries: the request id, who the client
    is (X-Forwarded-*, as the proxy sends them) and that JSON is wanted."""
    ex = ctx.ex
    xff = ex.header(b"x-forwarded-for")
    client = ex.client.encode()
    return b"".join(
        (
            b"x-request-id: ",
            ex.request_id,
            b"\r\nx-forwarded-for: ",
            xff + b", " + client if xff else client,
            b"\r\nx-forwarded-proto: ",
            ex.scheme,
            b"\r\nx-forwarded-host: ",
            ex.host,
            b"\r\naccept: application/json\r\n",
        )
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


def upstream_problem(status: int, reason: str, body: Any, **members: Any) -> Rejection:
    """The problem an endpoint answers when a call it needed failed with ``status``.

    A service's 4xx is passed through with the members of its JSON error body (its ``title``
    and ``detail`` included: "order 7 not found" is what the client needs to see); a service's
    5xx becomes 502; the gateway's own statuses (504 timeout, 503 no instance) stay.
    """
    if 400 <= status < 500 and isinstance(body, dict):
        found = dict(body)
        title = found.pop("title", None)
        detail = found.pop("detail", None)
        if detail is not None and not isinstance(detail, str):
            found["errors"] = detail  # e.g. FastAPI's list of validation errors
        for key in ("status", "request_id"):
            found.pop(key, None)
        return Rejection(
            status,
            title if isinstance(title, str) else reason_phrase(status).decode(),
            detail if isinstance(detail, str) else reason,
            **found,
            **members,
        )
    return Rejection(status, reason_phrase(status).decode(), reason, **members)
