"""Mirroring (shadow traffic): a copy of a sampled share of a route's requests goes to another
service; its answer is read and discarded, its status and latency counted.

The real request never waits for, nor fails because of, its copy:

- the copy is sent *after* the real request is over: the decision (sampling, the in-flight
  bound, the body's size) is made on the request's path; the rest — building the copy's head,
  choosing an instance, writing it — runs in a loop callback once the client has its answer,
  and the copy's answer is awaited in a task of its own. (A copy of a long streamed response's
  request therefore goes out when that response ends.);
- each copy has its own timeout (``mirror.timeout``, the whole exchange: its connect, first
  byte and total deadlines are armed on its connection like any upstream call's), and at most
  ``mirror.max_in_flight`` copies wait for answers at once: a request beyond that is not copied
  (counted as ``dropped``), so a slow or dead shadow service cannot pile up work;
- a failure of the copy (refused, reset, timed out, its breaker open) is counted, nothing more.

What is copied: the method, the upstream path (after the route's rewrite), the client's headers
without the hop-by-hop ones (and those ``Connection`` names) and without the gateway's own
(``Host``, ``Via``, ``X-Request-ID``, ``traceparent``, forwarding headers: written afresh, like a
proxied request's), the route's header edits, ``X-Edgeway-Mirror: 1``, and the body when it is
complete within ``mirror.max_body`` (and the gateway's request buffer). A request with a larger
body, or an upgrade (WebSocket), is not copied (``skipped``).

Metrics: ``edgeway_mirror_requests_total{route, service, outcome}`` (``outcome``: ``2xx`` to
``5xx`` for an answer, ``timeout``, ``failed``, ``dropped``, ``skipped``) and
``edgeway_mirror_duration_seconds{route, service}`` (copies sent, answered or not).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
from collections.abc import Awaitable
from typing import Any, Final

from edgeway.gateway.actions.proxy import (
    MIRROR_HEADER,
    NOT_FORWARDED,
    HeaderEdits,
    ProxyTarget,
    underscore_alias,
    upstream_path,
)
from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.traffic.config import MirrorRule
from edgeway.gateway.traffic.split import BOUNDS
from edgeway.gateway.upstream.call import CallLimits, UpstreamCall
from edgeway.gateway.upstream.service_client import child_traceparent, start_call
from edgeway.http.errors import UpstreamError, UpstreamTimeout
from edgeway.http.headers import connection_tokens
from edgeway.http.outgoing import UnsafeRequest
from edgeway.tasks import cancel_and_wait

__all__ = ["MIRROR_HEADER", "Copy", "Mirror", "MirrorStats"]

log = logging.getLogger("edgeway.gateway.traffic")

_VIA: Final = b"via: 1.1 edgeway\r\n"
_MARK: Final = MIRROR_HEADER + b": 1\r\n"


class Mirror:
    """The mirror of one route (see the module docstring). ``offer`` is called for every
    request; counts are kept here (``counts``) and in the metrics."""

    def __init__(
        self,
        route: str,
        rule: MirrorRule,
        target: ProxyTarget,
        edits: HeaderEdits,
        request_buffer: int,
        stats: MirrorStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.route = route
        self.service = rule.service
        self.fraction = float(rule.fraction)
        # A body is copied only when held whole, which the gateway does up to its request buffer.
        self.max_body = min(int(rule.max_body), request_buffer) if request_buffer > 0 else int(rule.max_body)
        self.timeout = float(rule.timeout)
        self.max_in_flight = rule.max_in_flight
        self.target = target
        self.edits = edits
        timeouts = target.cluster.timeouts
        self.limits = CallLimits(
            self.timeout, min(timeouts.first_byte, self.timeout), min(timeouts.connect, self.timeout), 0
        )
        self.rng = rng or random.Random()
        self.in_flight = 0
        # Outcomes and latency (shared across live reloads, exported at scrape time).
        self.stats = stats if stats is not None else MirrorStats()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Mirror {self.route} -> {self.service} {self.fraction:g}>"

    # -- on the request's path ----------------------------------------------------------------
    def offer(self, ctx: RequestContext) -> Copy | Awaitable[Copy | None] | None:
        """Whether to copy this request: the :class:`Copy` to send once the request is over
        (:meth:`Copy.send`, exactly once), None when it is not copied, or an awaitable of either
        the caller awaits before it forwards the request (its body must arrive first, up to
        ``max_body``; it raises what the body raises, as forwarding the request would)."""
        if self.fraction < 1.0 and self.rng.random() >= self.fraction:
            return None
        ex = ctx.ex
        if ex.upgrade is not None:
            self._count("skipped")
            return None
        if self.in_flight >= self.max_in_flight:
            self._count("dropped")
            return None
        body = ex.body
        if body.complete:
            return self._take(ctx)
        if body.received > self.max_body:
            self._count("skipped")
            return None
        return self._after_body(ctx)

    async def _after_body(self, ctx: RequestContext) -> Copy | None:
        await ctx.ex.body.fill(self.max_body + 1)
        if self.in_flight >= self.max_in_flight:  # filled up while the body arrived
            self._count("dropped")
            return None
        return self._take(ctx)

    def _take(self, ctx: RequestContext) -> Copy | None:
        body = ctx.ex.body
        # Only a body held whole, none of it read yet, can be copied.
        if not body.complete or body.received > self.max_body or body.buffered != body.received:
            self._count("skipped")
            return None
        self.in_flight += 1  # its place is held from now: the bound counts copies decided
        return Copy(self, ctx, body.peek() if body.received else None)

    # -- after the real request -----------------------------------------------------------------
    def send(self, ctx: RequestContext, body: bytes | None) -> None:
        """Send the copy of ``ctx``'s request (a :class:`Copy` calls it once the request is over)."""
        ex = ctx.ex
        loop = ex.event_loop()
        started = loop.time()
        try:
            call = start_call(
                self.target.cluster,
                ex.method,
                upstream_path(ctx),
                self._head(ctx),
                body,
                self.limits,
                guard=self.target.guard,
                loop=loop,
            )
        except UnsafeRequest:  # the client's request passed the parser: not expected
            log.exception("a mirrored request of route %s could not be built", self.route)
            self._done("failed", None)
            return
        if call.guard is None:
            # The common case, a small answer read whole by the connection: settled from the
            # callback that tells it arrived, with no task.
            call.on_answer(lambda: self._settle(call, started))
        else:
            self._await(call, started)  # a guarded service may retry: the full path

    def _settle(self, call: UpstreamCall, started: float) -> None:
        conn = call.conn
        if conn is None or not call.complete:
            self._await(call, started)  # failed, or a body still arriving: the full path
            return
        head = conn.head_waiter().result()
        conn.clear_deadline()
        conn.body.read_nowait()
        call.finish(head.status)
        self._done(f"{head.status // 100}xx", call.loop.time() - started)

    def _await(self, call: UpstreamCall, started: float) -> None:
        task = call.loop.create_task(self._answer(call, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _head(self, ctx: RequestContext) -> bytes:
        """The copy's header lines (start_call adds Host, framing and the deadline)."""
        ex = ctx.ex
        remove = self.edits.remove
        named: set[bytes] | None = None
        kept: list[tuple[bytes, bytes]] = []
        for name, value in ex.headers:
            lname = name.lower()
            if lname in NOT_FORWARDED:
                if lname == b"connection":
                    named = (named or set()) | connection_tokens(value)
                continue
            # 0x5F ("_") as a byte value: a memchr, where a bytes needle is first tried as an int.
            if lname in remove or (0x5F in lname and underscore_alias(lname, remove)):
                continue
            kept.append((name, value))
        parts = [
            name + b": " + value + b"\r\n"
            for name, value in kept
            if named is None or name.lower() not in named
        ]
        parts += (
            self.target.forwarding.lines_for(ex),
            _VIA,
            b"x-request-id: " + ex.request_id + b"\r\n",
            child_traceparent(ctx),
        )
        parts += [name + b": " + value + b"\r\n" for name, value in self.edits.set]
        parts.append(_MARK)
        return b"".join(parts)

    async def _answer(self, call: UpstreamCall, started: float) -> None:
        outcome = "failed"
        try:
            # Bounded by the call's own deadlines (connect, first byte, total: mirror.timeout),
            # which the pool's ticker fires: no timer of its own per copy.
            status = await _discard_reply(call)
            outcome = f"{status // 100}xx"
        except UpstreamTimeout:
            outcome = "timeout"
        except UpstreamError:
            outcome = "failed"
        except asyncio.CancelledError:
            outcome = "cancelled"  # the gateway is stopping
            raise
        except Exception:
            log.exception("a mirrored request of route %s failed unexpectedly", self.route)
        finally:
            self._done(outcome, asyncio.get_running_loop().time() - started)

    # -- counting -------------------------------------------------------------------------------
    def _done(self, outcome: str, seconds: float | None) -> None:
        self.in_flight -= 1
        if outcome == "cancelled":
            return
        self._count(outcome)
        if seconds is not None:
            self.stats.observe(seconds)

    def _count(self, outcome: str) -> None:
        counts = self.stats.counts
        counts[outcome] = counts.get(outcome, 0) + 1

    @property
    def counts(self) -> dict[str, int]:
        """Copies by outcome (``2xx`` to ``5xx``, ``timeout``, ``failed``, ``dropped``, ``skipped``)."""
        return dict(self.stats.counts)

    def describe(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "service": self.service,
            "fraction": self.fraction,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "outcomes": dict(sorted(self.stats.counts.items())),
        }

    async def stop(self) -> None:
        """Abandon the copies still waiting for answers (the gateway's config is retiring)."""
        await cancel_and_wait(*self._tasks)


class MirrorStats:
    """The counts of one mirror (a route and its shadow service): copies by outcome, and the
    latency of those sent. Shared across live reloads, read by the metrics at scrape time."""

    __slots__ = ("buckets", "counts", "latency_sum")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.latency_sum = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)

    def observe(self, seconds: float) -> None:
        self.latency_sum += seconds
        self.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1


class Copy:
    """A request's copy, decided and holding its place under ``max_in_flight``: sent with
    :meth:`send` once the request is over."""

    __slots__ = ("body", "ctx", "mirror")

    def __init__(self, mirror: Mirror, ctx: RequestContext, body: bytes | None) -> None:
        self.mirror = mirror
        self.ctx = ctx
        self.body = body

    def send(self) -> None:
        """Send it from a loop callback (the caller's work, the real response, goes first)."""
        self.ctx.ex.event_loop().call_soon(self.mirror.send, self.ctx, self.body)


async def _discard_reply(call: UpstreamCall) -> int:
    """Wait for the answer, read its body without keeping it; its status."""
    outcome: int | BaseException = 0
    try:
        conn, head = await call.response_head()
        outcome = head.status
        body = conn.body
        if body.complete:
            conn.clear_deadline()
            body.read_nowait()
        else:
            conn.set_deadline(call.end, "total", call.limits.total)
            while await body.read():
                pass
        return head.status
    except BaseException as exc:
        if outcome == 0:
            outcome = exc
        raise
    finally:
        call.finish(outcome)
