"""Running one request's aggregate plan: calls in parallel unless one depends on another.

A *flat* plan (no dependencies, no fan-out: the common "three calls for one screen") starts every
call at once and then awaits them — the requests are all on the wire before the first wait, so
they run in parallel without a task per call. When no call is guarded it awaits them in declared
order, each answer waking the request's task directly; a required call that fails meanwhile
interrupts the wait (:meth:`Run._run_direct`). Guarded calls may retry, which happens as their
answer is taken, so they are taken as they arrive (:meth:`Run._run_flat`). Any other plan runs
each call as a task started the moment its dependencies are done. Fan-out calls run their
element calls with bounded concurrency.

A call ends with an output (its shaped response, or its fallback) or a :class:`CallError`. A
failed required call ends the run at once (the rest is abandoned); a failed optional call is
recorded and the run goes on. The endpoint deadline fails every call still waiting for its
answer and keeps later ones from starting; a call whose whole answer is already in keeps it, even
when the run has not taken it yet (answers are taken in declared order, a slow call first).

Calls to a service that configures resilience go through its guard (admission, breakers,
retries: :mod:`edgeway.gateway.upstream.service_client`); a refused call fails like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from edgeway.gateway.actions.aggregate.plan import BadValue, CallPlan, MissingValue, Plan, Scope
from edgeway.gateway.actions.aggregate.shaping import ShapeError
from edgeway.gateway.actions.aggregate.values import MISSING
from edgeway.gateway.telemetry.component import GatewayTelemetry
from edgeway.gateway.upstream.resilient import Refused
from edgeway.gateway.upstream.service_client import (
    ServiceReply,
    UnsafeRequest,
    UpstreamCall,
    child_traceparent,
    failure_code,
    forwarded_headers,
    start_call,
)
from edgeway.http import json_input
from edgeway.http.errors import UpstreamError, UpstreamTimeout
from edgeway.http.json_input import TooDeep

if TYPE_CHECKING:
    from edgeway.gateway.actions.transcode.pending import GrpcPending

    # Explicit: in the compiled build's type check the import cycle through the transcoder can
    # leave GrpcPending unresolved here, and an implicit alias then reads as a variable.
    Pending: TypeAlias = "UpstreamCall | GrpcPending"  # an HTTP exchange, or a gRPC call (`grpc` calls)


@dataclass(slots=True)
class CallError:
    """Why a call has no output.

    ``kind``: ``upstream`` (the service answered an error status), ``transport`` (no usable
    answer: connect, reset, timeout), ``input`` (the request lacked a value the call needs),
    ``response`` (the answer was not the JSON the call expects), ``skipped`` (a dependency failed).
    """

    status: int
    reason: str
    kind: str
    body: Any = None  # the service's JSON error body, when it sent one
    items: list[int] | None = None  # failed fan-out elements
    code: str | None = None  # transport failures: why, in short (failure_code)
    retry_after: float | None = None  # refusals: when the service may take calls again

    @property
    def endpoint_status(self) -> int:
        """What the endpoint answers when this fails a required call: the service's 4xx as is,
        502 for its 5xx and for bad answers, the gateway's own status otherwise (504 timeouts)."""
        if self.kind == "upstream" and self.status >= 500:
            return 502
        return self.status

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.code is not None:
            out["code"] = self.code
        if self.items is not None:
            out["items"] = self.items
        return out


class DeadlineExceeded(UpstreamTimeout):
    """The endpoint's deadline passed while the call was in flight."""

    def __init__(self, seconds: float) -> None:
        super().__init__("deadline", seconds)


class Interrupted(UpstreamError):
    """Another call failed for good while this one was awaited: the run ends."""

    def __init__(self) -> None:
        super().__init__("interrupted: another required call failed")


class Run:
    """One request's execution of a plan."""

    __slots__ = (
        "_deadline",
        "_deadline_at",
        "_forward_cache",
        "_headers",
        "_loop",
        "errors",
        "expired",
        "fatal",
        "inflight",
        "outputs",
        "plan",
        "scope",
        "telemetry",
    )

    def __init__(
        self,
        plan: Plan,
        scope: Scope,
        common_headers: bytes,
        loop: asyncio.AbstractEventLoop,
        telemetry: GatewayTelemetry | None = None,
    ) -> None:
        self.plan = plan
        self.scope = scope
        self.outputs: dict[str, Any] = {}
        self.errors: dict[str, CallError] = {}
        self.fatal: tuple[CallPlan, CallError] | None = None
        self.inflight: set[Pending] = set()
        self.expired = False
        self._headers = common_headers  # x-request-id, x-forwarded-*: the same on every call
        self._loop = loop
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None  # loop time, when the plan has a deadline
        self._forward_cache: dict[frozenset[bytes], bytes] = {}
        self.telemetry = telemetry

    async def execute(self) -> None:
        plan = self.plan
        if plan.deadline is not None:
            self._deadline_at = self._loop.time() + plan.deadline
            self._deadline = self._loop.call_at(self._deadline_at, self._expire)
        try:
            if plan.direct:
                await self._run_direct()
            elif plan.flat:
                await self._run_flat()
            else:
                await self._run_graph()
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            for pending in list(self.inflight):
                pending.close()
            self.inflight.clear()

    # -- schedules -------------------------------------------------------------------------
    def _start_all(self) -> list[tuple[CallPlan, Pending]] | None:
        """Send every call of a flat plan; None when one that could not start ended the run."""
        waiting: list[tuple[CallPlan, Pending]] = []
        for call in self.plan.calls:
            pending = self._start(call, None)
            if isinstance(pending, CallError):
                self._settle(call, pending)
                if self.fatal is not None:
                    return None
            else:
                waiting.append((call, pending))
        return waiting

    async def _run_flat(self) -> None:
        # Every request goes out before the first wait: the calls run in parallel. Answers are
        # taken as they arrive, so a required call that fails ends the run without waiting for
        # a slower one; one shared future wakes this task, not a task per call.
        waiting = self._start_all()
        if waiting is None:
            return
        signal: list[asyncio.Future[None] | None] = [None]

        def wake() -> None:
            future = signal[0]
            if future is not None and not future.done():
                future.set_result(None)

        if len(waiting) > 1:
            for _, pending in waiting:
                pending.on_answer(wake)
        while waiting:
            ready = [entry for entry in waiting if entry[1].answered] if len(waiting) > 1 else waiting[:]
            if not ready:
                future = signal[0] = self._loop.create_future()
                await future
                continue
            for entry in ready:
                waiting.remove(entry)
                call, pending = entry
                self._settle(call, await self._receive(call, pending))
                if self.fatal is not None:
                    return

    async def _run_direct(self) -> None:
        # Answers are taken in declared order, so the task awaits each call's own future: one
        # event-loop hop from an answer to the task, where waking a shared future costs two.
        # A required call whose failure is certain while another is awaited must still end the
        # run at once: it interrupts the awaited call (the run ends, so that call was to be
        # abandoned anyway) and is taken first.
        waiting = self._start_all()
        if waiting is None:
            return
        failed: list[tuple[CallPlan, Pending]] = []
        current: list[Pending] = []  # the call being awaited

        def watch(call: CallPlan, pending: Pending) -> None:
            def answered() -> None:
                if pending.failed and not failed and current and current[0] is not pending:
                    failed.append((call, pending))
                    current[0].fail(Interrupted())

            pending.on_answer(answered)

        for call, pending in waiting[1:]:
            if call.required:  # (a required call never has a fallback)
                watch(call, pending)
        for call, pending in waiting:
            if failed:
                break
            current[:] = (pending,)
            result = await self._receive(call, pending)
            if failed:
                break
            self._settle(call, result)
            if self.fatal is not None:
                return
        if failed:
            call, pending = failed[0]
            self._settle(call, await self._receive(call, pending))

    async def _run_graph(self) -> None:
        waiting = {call.name: len(call.deps) for call in self.plan.calls}
        tasks: dict[asyncio.Task[None], CallPlan] = {}

        def launch(call: CallPlan) -> None:
            failed = [dep for dep in call.deps if dep not in self.outputs]
            if failed:
                self._fail(call, CallError(502, f"skipped: '{failed[0]}' failed", "skipped"))
            elif self.expired:
                self._fail(
                    call, CallError(504, "the endpoint deadline passed before it could start", "transport")
                )
            else:
                tasks[self._loop.create_task(self._run_call(call))] = call

        def finished(call: CallPlan) -> None:
            for dependent in call.dependents:
                waiting[dependent.name] -= 1
                if waiting[dependent.name] == 0:
                    launch(dependent)
                    if dependent.name in self.errors:  # failed at launch: its dependents go on
                        finished(dependent)

        for call in self.plan.calls:
            if not call.deps:
                launch(call)
                if call.name in self.errors:
                    finished(call)
        try:
            while tasks and self.fatal is None:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    call = tasks.pop(task)
                    task.result()  # _run_call records failures itself; anything else is a bug
                    finished(call)
        finally:
            for task in tasks:
                task.cancel()

    async def _run_call(self, call: CallPlan) -> None:
        if call.fan_kind == "for_each":
            await self._for_each(call)
            return
        item: Any = None
        if call.fan_kind == "batch":
            values = self._fan_values(call)
            if values is None:
                return
            item = _distinct(values)
            if not item:  # nothing to ask for: no call
                self._output(call, [] if call.collection else None, [] if call.collection else None)
                return
        pending = self._start(call, item)
        self._settle(call, pending if isinstance(pending, CallError) else await self._receive(call, pending))

    async def _for_each(self, call: CallPlan) -> None:
        values = self._fan_values(call)
        if values is None:
            return
        unique = _distinct(values)
        gate = asyncio.Semaphore(call.concurrency)

        async def one(item: Any) -> tuple[Any, Any] | CallError:
            async with gate:
                if self.expired:
                    return CallError(504, "the endpoint deadline passed before it could start", "transport")
                pending = self._start(call, item)
                return pending if isinstance(pending, CallError) else await self._receive(call, pending)

        results = await asyncio.gather(*(one(item) for item in unique))
        by_value: dict[Any, tuple[Any, Any] | CallError] = {}
        for item, result in zip(unique, results, strict=True):
            by_value[_key(item)] = result
        raw: list[Any] = []
        out: list[Any] = []
        failed: list[int] = []
        first: CallError | None = None
        for index, item in enumerate(values):
            result = by_value[_key(item)]
            if isinstance(result, CallError):
                failed.append(index)
                first = first or result
                if call.on_item_error == "null":
                    raw.append(None)
                    out.append(None)
                continue
            raw.append(result[0])
            out.append(result[1])
        if first is not None:
            first.items = failed
            if call.on_item_error == "fail":
                self._fail(call, first)
                return
            self.errors[call.name] = first  # partial: the output stands, the response is incomplete
        self._output(call, raw, out)

    # -- one call --------------------------------------------------------------------------
    def _fan_values(self, call: CallPlan) -> list[Any] | None:
        assert call.fan_ref is not None
        try:
            value = call.fan_resolver(self.scope, None)
        except BadValue as exc:
            self._fail(call, CallError(400 if exc.from_client else 502, str(exc), "input"))
            return None
        if value is MISSING:
            missing = MissingValue(call.fan_ref)
            self._fail(call, CallError(400 if missing.from_client else 502, str(missing), "input"))
            return None
        return value if type(value) is list else [value]

    def _start(self, call: CallPlan, item: Any) -> Pending | CallError:
        """Render and send one request."""
        scope = self.scope
        try:
            target = call.target(scope, item)
            body = call.body(scope, item)
            own = call.own_headers(scope, item)
        except (MissingValue, BadValue) as exc:
            return CallError(400 if exc.from_client else 502, str(exc), "input")
        if call.grpc is not None:
            return self._start_grpc(call, body, own)
        ctx = scope.ctx
        service = call.cluster.name
        telemetry = self.telemetry
        meter = trace = None
        if telemetry is not None:
            meter = telemetry.meter(service)
            trace = telemetry.call_trace(ctx.span, service, call.name)
        # Traced, each attempt carries its own traceparent (its span's).
        parts = [self._headers, child_traceparent(ctx) if trace is None else b""]
        if call.forward:
            parts.append(self._forwarded(call.forward))
        parts.append(own)
        if body is not None:
            content_type = call.content_type or ctx.ex.header(b"content-type")
            if content_type:
                parts += (b"content-type: ", content_type, b"\r\n")
        try:
            pending = start_call(
                call.cluster,
                call.method,
                target,
                b"".join(parts),
                body,
                call.limits,
                guard=call.guard,
                loop=self._loop,
                deadline=self._deadline_at,
                meter=meter,
                trace=trace,
            )
        except UnsafeRequest as exc:  # rendering keeps values in bounds; this is the last guard
            return CallError(502, f"{call.cluster.name}: the request cannot be sent: {exc}", "input")
        self.inflight.add(pending)
        return pending

    def _start_grpc(self, call: CallPlan, body: bytes | None, own: bytes) -> Pending | CallError:
        """Build the method's request from the rendered body and start the call; its metadata
        carries what an HTTP call's headers would (request id, forwarding, trace, forwarded
        client headers, the call's own headers)."""
        # Imported here: only a plan with a grpc call gets this far, and it has loaded grpcio.
        from edgeway.gateway.actions.transcode.invoker import metadata_of_lines
        from edgeway.gateway.actions.transcode.pending import BadInput

        caller = call.grpc
        assert caller is not None
        try:
            request = caller.request(body)
        except BadInput as exc:
            status = 400 if caller.input_from_client else 502
            return CallError(status, f"{call.cluster.name}: {exc}", "input")
        lines = [self._headers, child_traceparent(self.scope.ctx)]
        if call.forward:
            lines.append(self._forwarded(call.forward))
        lines.append(own)
        pending = caller.start(request, metadata_of_lines(b"".join(lines)), self._loop, self._deadline_at)
        self.inflight.add(pending)
        return pending

    def _forwarded(self, names: frozenset[bytes]) -> bytes:
        """The client's headers in ``names``, as header lines (once per set per request)."""
        cache = self._forward_cache
        found = cache.get(names)
        if found is None:
            found = cache[names] = forwarded_headers(self.scope.ctx.ex.headers, names)
        return found

    async def _receive(self, call: CallPlan, pending: Pending) -> tuple[Any, Any] | CallError:
        """The call's (response, shaped output), or why there is none."""
        try:
            reply = await pending.reply()
        except UpstreamError as exc:
            return _transport_error(call, exc)
        finally:
            self.inflight.discard(pending)
        return _parse(call, reply)

    def _settle(self, call: CallPlan, result: tuple[Any, Any] | CallError) -> None:
        if isinstance(result, CallError):
            self._fail(call, result)
        else:
            self._output(call, result[0], result[1])

    def _output(self, call: CallPlan, raw: Any, output: Any) -> None:
        self.scope.raw[call.name] = raw
        self.outputs[call.name] = output

    def _fail(self, call: CallPlan, error: CallError) -> None:
        self.errors[call.name] = error
        if call.has_fallback:
            self._output(call, call.fallback, call.fallback)
        elif call.required and self.fatal is None:
            self.fatal = (call, error)

    def _expire(self) -> None:
        # Calls already answered in full are not cut (UpstreamCall.fail keeps a complete answer).
        self.expired = True
        assert self.plan.deadline is not None
        exc = DeadlineExceeded(self.plan.deadline)
        for pending in list(self.inflight):
            pending.fail(exc)


def _parse(call: CallPlan, reply: ServiceReply) -> tuple[Any, Any] | CallError:
    """(response, shaped output), or why there is none."""
    service = call.cluster.name
    try:
        value = json_input.loads(reply.body) if reply.body else None
    except TooDeep:
        if 200 <= reply.status < 300:
            return CallError(502, f"{service} answered {reply.status} with {TooDeep()}", "response")
        value = None
    except orjson.JSONDecodeError:
        if 200 <= reply.status < 300:
            return CallError(
                502, f"{service} answered {reply.status} with a body that is not JSON", "response"
            )
        value = None
    if not 200 <= reply.status < 300:
        return CallError(reply.status, f"{service} answered {reply.status}", "upstream", body=value)
    try:
        return value, call.shape(value)
    except ShapeError as exc:
        return CallError(502, f"{service}: {exc}", "response")


def _transport_error(call: CallPlan, exc: UpstreamError) -> CallError:
    return CallError(
        exc.status,
        f"{call.cluster.name}: {exc}",
        "transport",
        code=failure_code(exc),
        retry_after=exc.retry_after if isinstance(exc, Refused) else None,
    )


def _key(value: Any) -> Hashable:
    """Equal fan-out elements are asked for once; objects and lists are compared as JSON."""
    if value is None or type(value) in (str, int, float, bool):
        return (type(value).__name__, value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _distinct(values: list[Any]) -> list[Any]:
    seen: set[Hashable] = set()
    out: list[Any] = []
    for value in values:
        key = _key(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out
