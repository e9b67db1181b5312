"""The caller's deadline inside a service: read from the request, honoured, passed on.

The gateway sends every proxied request with the time it has left, ``X-Edgeway-Deadline-Ms``
(see :mod:`edgeway.resilience.deadline`; gRPC's ``grpc-timeout`` is read too, the smaller
wins). Past that moment the gateway has answered 504 and nobody waits for this service's answer,
so :class:`DeadlineMiddleware`

1. answers **504** at once when the budget is already spent on arrival;
2. otherwise runs the endpoint under that deadline and, when it passes before the response has
   started, cancels the endpoint and answers **504** (problem+json) instead of finishing work
   for a client that has gone; once the response has started it lets it finish (and runs
   background tasks, which no longer see a deadline) whatever the clock says;
3. keeps the deadline for the request's task (and tasks it starts), where :func:`remaining`
   reads it and the service kit's clients (:mod:`edgeway.service.clients`) take it as the
   budget of their calls: each attempt sends ``X-Edgeway-Deadline-Ms`` with what is left and
   gives up when it runs out.

A request without the header has no deadline: endpoints and clients keep their own timeouts.
Like the gateway, a malformed value is ignored rather than refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeway.resilience.deadline import incoming_budget
from edgeway.service.problems import problem_response

__all__ = ["DeadlineMiddleware", "deadline_at", "deadline_scope", "remaining"]

_log = logging.getLogger("edgeway.service")


class _Deadline:
    """When the current request's budget runs out (``time.monotonic()``); ``None`` once its
    response has started. Mutable and shared, so that tasks of the request (a streaming body's,
    background tasks') see the change too."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at: float | None = at


_deadline: ContextVar[_Deadline | None] = ContextVar("edgeway_deadline", default=None)


def deadline_at() -> float | None:
    """The ``time.monotonic()`` the current request must be answered by; None without a deadline
    (none was sent, or the response has started)."""
    deadline = _deadline.get()
    return deadline.at if deadline is not None else None


def remaining() -> float | None:
    """Seconds the current request has left (0 when spent); None without a deadline."""
    at = deadline_at()
    if at is None:
        return None
    return max(0.0, at - time.monotonic())


@contextmanager
def deadline_scope(budget: float | None) -> Iterator[None]:
    """Run a block under a deadline ``budget`` seconds from now, as a request with that budget
    runs its endpoint (:func:`remaining` and the kit's clients see it); None: no deadline. What a
    transport other than HTTP uses: a gRPC call's ``grpc-timeout`` (:mod:`edgeway.service.grpc`)."""
    if budget is None:
        yield
        return
    token = _deadline.set(_Deadline(time.monotonic() + max(0.0, budget)))
    try:
        yield
    finally:
        _deadline.reset(token)


class DeadlineMiddleware:
    """Pure ASGI: see the module docstring. Sits inside the request-context middleware, so a 504
    it sends is logged and counted like any answer, with the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = incoming_budget(scope["headers"])
        if budget is None:
            await self.app(scope, receive, send)
            return
        if budget <= 0:
            await _expired(scope, "the request's deadline had passed on arrival")(scope, receive, send)
            return
        deadline = _Deadline(time.monotonic() + budget)
        token = _deadline.set(deadline)
        started = False
        try:
            async with asyncio.timeout(budget) as timeout:

                async def send_started(message: Message) -> None:
                    nonlocal started
                    if message["type"] == "http.response.start":
                        started = True
                        timeout.reschedule(None)  # a response under way is worth finishing
                        deadline.at = None  # and background tasks after it owe the caller nothing
                    await send(message)

                await self.app(scope, receive, send_started)
        except TimeoutError:
            if started or not timeout.expired():
                raise  # not ours: the endpoint's own timeout, or too late to answer
            _log.info(
                "deadline of %.0f ms passed in %s %s: answering 504",
                budget * 1000,
                scope["method"],
                scope["path"],
            )
            detail = f"the request's deadline ({budget * 1000:.0f} ms) passed before the answer was ready"
            await _expired(scope, detail)(scope, receive, send)
        finally:
            _deadline.reset(token)


def _expired(scope: Scope, detail: str) -> ASGIApp:
    return problem_response(504, detail, instance=scope["path"])
