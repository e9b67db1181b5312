"""Calling another service over gRPC: a typed stub over discovery, balancing, breakers, retries.

``kit.grpc_client("inventory", inventory_pb2_grpc.InventoryStub)`` gives the generated stub
(typed as its ``...AsyncStub``, so ``await stub.Reserve(request)`` is checked by mypy) built on a
:class:`GrpcChannel`: a ``grpc.aio.Channel`` that stands for every instance of the service. For
each call it

1. resolves the service through the kit's gRPC discovery (``grpc_services`` settings,
   ``EDGEWAY_SERVICE_<NAME>_GRPC_URLS``, the registry's ``grpc`` address of each instance, DNS
   SRV ``_grpc._tcp.<name>``): addresses ``grpc://host:port``, or ``grpcs://`` for TLS with the
   kit's ``tls_ca``/``tls_client_cert`` (mTLS);
2. picks an instance in turn, skipping those whose breaker is open
   (:class:`~edgeway.service.peers.Peers`, the pieces the HTTP client uses), on a channel of its
   own kept open between calls; an instance whose connection cannot be made (refused, or not
   ready within ``connect_timeout``) counts as a failure and the call moves on to the next one:
   nothing was sent, so any method may go elsewhere;
3. sends ``x-request-id``, ``traceparent``/``tracestate`` (a CLIENT span, child of the current
   one) and the caller's ``authorization``, and as its deadline the smaller of the call's
   ``timeout`` (else ``client_timeout``) and what is left of the caller's own deadline
   (``grpc-timeout``, see :mod:`edgeway.service.deadline`);
4. retries an answer ``UNAVAILABLE``, or an attempt that ran out of its ``client_timeout``, on
   another instance after a jittered backoff, but only for methods the ``.proto`` declares safe
   to repeat (``option idempotency_level = NO_SIDE_EFFECTS`` or ``IDEMPOTENT``), only while
   the service's retry budget has room and the caller's deadline leaves time, and for a
   server-streaming method only before its first message arrived;
5. reports every attempt to the instance's breaker: ``UNAVAILABLE``, ``INTERNAL``, ``UNKNOWN``,
   ``DATA_LOSS``, ``UNIMPLEMENTED`` and a timeout of its own as failures, every other answer as
   a success (the peer is healthy, the request was wrong), nothing when the caller's deadline
   ran out or the call was cancelled;
6. records ``grpc_client_handled_total`` and ``grpc_client_handling_seconds`` in the kit's
   registry.

What it raises: an error status from the peer is :class:`~edgeway.service.grpc.errors.
PeerStatusError` (a :class:`~edgeway.service.errors.PeerResponseError`: ``code``, ``status``,
``reason``, ``request_id``, ``violations``); no instance, every breaker open, every attempt
failed and the caller's deadline are the HTTP client's :class:`~edgeway.service.errors.
NoInstancesError`, :class:`~edgeway.service.errors.CircuitOpenError`,
:class:`~edgeway.service.errors.PeerUnavailableError` and :class:`~edgeway.service.errors.
DeadlineExceededError`. Raised in a handler, each is answered the usual way (a problem over
HTTP, a status over gRPC).

Client-streaming and bidirectional methods take their requests as an iterator
(``stub.Import(iter(entries))``); ``write()``/``done_writing()`` are not offered, since the call
starts only once an instance is connected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from edgeway.http.grpc_wire import CHANNEL_OPTIONS
from edgeway.observability.metrics import Metrics
from edgeway.observability.tracing import Tracing
from edgeway.resilience.breaker import BreakerPolicy, CircuitBreaker
from edgeway.resilience.budget import BudgetPolicy
from edgeway.service.clients import RetryPolicy, propagation_headers
from edgeway.service.deadline import deadline_at
from edgeway.service.discovery import Discovery
from edgeway.service.errors import DeadlineExceededError, NoInstancesError, PeerUnavailableError
from edgeway.service.grpc.errors import PeerStatusError, http_status
from edgeway.service.peers import Peers
from edgeway.service.settings import ServiceSettings
from edgeway.tasks import cancel_and_wait

__all__ = ["CHANNEL_OPTIONS", "GrpcChannel", "channel_credentials", "grpc_target"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# What a call takes as metadata (grpc.aio.Metadata or pairs); a string: generic in the stubs only.
Metadata: TypeAlias = "grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]"

# Seconds the calls on the connection of an instance that left discovery get before it closes.
STALE_GRACE = 5.0

_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_SAFE = frozenset({descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT})


def channel_credentials(settings: ServiceSettings) -> grpc.ChannelCredentials | None:
    """The TLS of the kit's calls to ``grpcs://`` instances, from the settings HTTPS calls use:
    ``tls_ca`` (else the system's CAs) and ``tls_client_cert``/``tls_client_key`` (mTLS); None
    when they say nothing (the system's CAs, no client certificate)."""
    if settings.tls_ca is None and settings.tls_client_cert is None:
        return None
    chain = settings.tls_client_cert.read_bytes() if settings.tls_client_cert is not None else None
    key = settings.tls_client_key.read_bytes() if settings.tls_client_key is not None else chain
    return grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca.read_bytes() if settings.tls_ca is not None else None,
        private_key=key,
        certificate_chain=chain,
    )


def grpc_target(address: str) -> tuple[str, bool]:
    """``grpc://host:port`` → (``host:port``, plaintext); ``grpcs://`` → TLS; a bare
    ``host:port`` is plaintext."""
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if address.startswith(scheme):
            return address[len(scheme) :].rstrip("/"), tls
    return address, False


class _Method:
    __slots__ = ("idempotent", "name", "path", "service", "span_attributes", "span_name")

    def __init__(self, path: str, peer: str) -> None:
        self.path = path
        self.service, _, self.name = path.lstrip("/").rpartition("/")
        self.span_name = f"{self.service}/{self.name}"
        self.span_attributes = {
            "rpc.system": "grpc",
            "rpc.service": self.service,
            "rpc.method": self.name,
            "peer.service": peer,
        }
        try:
            found = descriptor_pool.Default().FindMethodByName(f"{self.service}.{self.name}")
            self.idempotent = found.GetOptions().idempotency_level in _SAFE
        except KeyError:  # not generated code (a hand-made method path): assume it is not safe
            self.idempotent = False


class _Attempting:
    """One call through the channel: its deadline, metadata, span and the attempts' bookkeeping."""

    def __init__(
        self, channel: GrpcChannel, method: _Method, timeout: float | None, metadata: Metadata | None
    ) -> None:
        self.channel = channel
        self.method = method
        now = time.monotonic()
        own = now + (timeout if timeout is not None else channel.timeout)
        caller = deadline_at()
        # The caller's deadline bounds the call; when it is the nearer one, running out is not
        # the peer's fault (no breaker failure, DeadlineExceededError).
        self.callers = caller is not None and caller <= own
        self.deadline = min(own, caller) if caller is not None else own
        self.per_attempt = min(channel.timeout, timeout) if timeout is not None else channel.timeout
        self.tried: set[str] = set()
        self.attempts = 0
        self.last_error = "no attempt made"
        self.started = time.perf_counter()
        self.span: Span | None = None
        if channel.tracing is not None:
            # The attributes in one go, and the traceparent read off the span rather than by
            # making it current: measured, both are a good part of what the kit adds per call.
            self.span = channel.tracing.tracer.start_span(
                method.span_name, kind=SpanKind.CLIENT, attributes=method.span_attributes
            )
        headers = propagation_headers(None, authorization=channel.propagate_authorization, span=self.span)
        if metadata:
            given = {k.lower(): v for k, v in metadata}
            self.metadata: tuple[tuple[str, str | bytes], ...] = (
                *given.items(),
                *((k, v) for k, v in headers.items() if k not in given),
            )
        else:
            self.metadata = tuple(headers.items())

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def attempt_timeout(self) -> float:
        left = self.left()
        if left <= 0:
            raise self.deadline_error("it had passed before the call")
        return min(left, self.per_attempt)

    def deadline_error(self, what: str) -> Exception:
        if self.callers:
            return DeadlineExceededError(
                self.channel.service,
                f"{self.method.path} at {self.channel.service} not completed: the request's deadline {what}",
            )
        return PeerUnavailableError(
            self.channel.service,
            f"{self.method.path} at {self.channel.service} not completed: its timeout {what}; "
            f"last: {self.last_error}",
        )

    async def connect(self) -> tuple[str, grpc.aio.Channel, CircuitBreaker]:
        """An instance with a ready connection, its channel and breaker: nothing was sent to the
        instances that could not be reached (each counted as a failure), so this never needs
        the method to be safe to repeat."""
        channel = self.channel
        addresses = await channel.resolve()
        while True:
            address = channel.peers.pick(addresses, frozenset(self.tried))
            self.tried.add(address)
            breaker = channel.peers.breaker(address)
            ready = channel.channel_for(address)
            state = await _connected(ready, min(self.left(), channel.connect_timeout))
            if state is grpc.ChannelConnectivity.READY:
                return address, ready, breaker
            breaker.record_failure()
            self.last_error = f"{address}: not connected ({state.name.lower()})"
            if self.left() <= 0:
                raise self.deadline_error(f"ran out connecting; last: {self.last_error}")
            if len(self.tried) >= len(addresses):
                raise PeerUnavailableError(
                    channel.service,
                    f"{self.method.path} at {channel.service}: no instance could be reached; "
                    f"last: {self.last_error}",
                )

    async def may_retry(self) -> bool:
        """Whether to try again after a failed attempt: the method is safe to repeat, attempts and
        the budget are left, and the backoff fits in the deadline (then waits it out)."""
        channel = self.channel
        if not self.method.idempotent or self.attempts >= channel.retry.attempts:
            return False
        delay = channel.retry.delay(self.attempts - 1)
        if self.left() <= delay:
            return False
        if not channel.peers.budget.try_spend():
            self.last_error += " (retry budget spent)"
            return False
        await asyncio.sleep(delay)
        return True

    def failed(self, address: str, breaker: CircuitBreaker, error: grpc.aio.AioRpcError) -> Exception | None:
        """Account for an attempt that ended in ``error``; None when it may be retried, else
        what to raise."""
        code = error.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            if self.left() <= 0.001:
                if self.callers:
                    breaker.record_ignored()
                else:
                    breaker.record_failure()
                self.last_error = f"{address}: deadline exceeded"
                return self.deadline_error(f"ran out waiting for {address}")
            breaker.record_failure()  # its own per-attempt timeout: the peer was too slow
            self.last_error = f"{address}: no answer within {self.per_attempt:.3g}s"
            return None
        if code is grpc.StatusCode.CANCELLED:
            breaker.record_ignored()
        elif code in _FAILURES:
            breaker.record_failure()
        else:
            breaker.record_success()
        if code is grpc.StatusCode.UNAVAILABLE:
            self.last_error = f"{address}: UNAVAILABLE: {error.details()}"
            return None
        return PeerStatusError(
            self.channel.service,
            self.method.path,
            code,
            error.details() or "",
            error.trailing_metadata() or (),
        )

    def unavailable(self) -> PeerUnavailableError:
        return PeerUnavailableError(
            self.channel.service,
            f"{self.method.path} at {self.channel.service} failed after {self.attempts} attempt(s); "
            f"last: {self.last_error}",
        )

    def done(self, code: grpc.StatusCode | None, error: BaseException | None = None) -> None:
        channel, method = self.channel, self.method
        name = code.name if code is not None else type(error).__name__ if error is not None else "OK"
        if channel.metrics is not None:
            channel.handled.labels(method.service, method.name, name).inc()
            channel.latency.labels(method.service, method.name).observe(time.perf_counter() - self.started)
        span = self.span
        if span is not None:
            if code is not None:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
            if error is not None or (code is not None and http_status(code) >= 500):
                span.set_status(Status(StatusCode.ERROR))
                if error is not None:
                    span.record_exception(error)
            span.end()


_SETTLED = frozenset(
    {
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    }
)


async def _connected(channel: grpc.aio.Channel, wait: float) -> grpc.ChannelConnectivity:
    """The channel's state once it is ready, has failed to connect, or ``wait`` seconds passed:
    a refused connection is known at once, not after the whole wait."""
    state = channel.get_state(try_to_connect=True)
    if state in _SETTLED or wait <= 0:
        return state
    try:
        async with asyncio.timeout(wait):
            while state not in _SETTLED:
                await channel.wait_for_state_change(state)
                state = channel.get_state()
    except TimeoutError:
        pass
    return state


def _code_of(error: BaseException) -> grpc.StatusCode | None:
    if isinstance(error, PeerStatusError):
        return error.code
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code()
    return None


class _Call(Generic[Resp]):
    """What the kit's calls share: the last attempt's underlying call answers the Call API."""

    def __init__(self) -> None:
        self._call: grpc.aio.Call | None = None
        self._cancelled = False

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._call is not None and self._call.done()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining() if self._call is not None else None

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel() if self._call is not None else True

    def add_done_callback(self, callback: Any) -> None:
        if self._call is None:
            raise RuntimeError("the call has not started: await it (or iterate it) first")
        self._call.add_done_callback(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._started().initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await self._started().trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await self._started().code()

    async def details(self) -> str:
        return await self._started().details()

    async def wait_for_connection(self) -> None:
        await self._started().wait_for_connection()

    def _started(self) -> grpc.aio.Call:
        if self._call is None:
            raise RuntimeError("the call has not started: await it (or iterate it) first")
        return self._call


class _Once(Generic[Resp]):
    """A call awaited again answers what it answered the first time, as grpcio's calls do."""

    def __init__(self, run: Callable[[Any], Awaitable[Resp]]) -> None:
        self._run = run
        self._outcome: tuple[bool, Any] | None = None

    async def result(self, call: Any) -> Resp:
        if self._outcome is None:
            try:
                self._outcome = (True, await self._run(call))
            except Exception as exc:
                self._outcome = (False, exc)
        ok, value = self._outcome
        if ok:
            return cast(Resp, value)
        raise cast(Exception, value)


class _UnaryUnaryCall(_Call[Resp], grpc.aio.UnaryUnaryCall[Req, Resp], Generic[Req, Resp]):
    def __init__(self, run: Callable[[_UnaryUnaryCall[Req, Resp]], Awaitable[Resp]]) -> None:
        super().__init__()
        self._once = _Once(run)

    def __await__(self) -> Generator[None, None, Resp]:
        return self._once.result(self).__await__()


class _StreamingCall(_Call[Resp]):
    def __init__(self, run: Callable[[Any], AsyncIterator[Resp]]) -> None:
        super().__init__()
        self._run = run
        self._iterator: AsyncIterator[Resp] | None = None

    def __aiter__(self) -> AsyncIterator[Resp]:
        if self._iterator is None:
            self._iterator = self._run(self)
        return self._iterator

    async def read(self) -> Any:
        try:
            return await self.__aiter__().__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF

    async def write(self, request: Any) -> None:
        raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")

    async def done_writing(self) -> None:
        raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")


class _UnaryStreamCall(_StreamingCall[Resp], grpc.aio.UnaryStreamCall[Req, Resp], Generic[Req, Resp]):
    pass


class _StreamStreamCall(_StreamingCall[Resp], grpc.aio.StreamStreamCall[Req, Resp], Generic[Req, Resp]):
    pass


class _StreamUnaryCall(_Call[Resp], grpc.aio.StreamUnaryCall[Req, Resp], Generic[Req, Resp]):
    def __init__(self, run: Callable[[_StreamUnaryCall[Req, Resp]], Awaitable[Resp]]) -> None:
        super().__init__()
        self._once = _Once(run)

    def __await__(self) -> Generator[None, None, Resp]:
        return self._once.result(self).__await__()

    async def write(self, request: Req) -> None:
        raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")

    async def done_writing(self) -> None:
        raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")


class _UnaryUnary(grpc.aio.UnaryUnaryMultiCallable[Req, Resp]):
    def __init__(self, channel: GrpcChannel, method: _Method, serialize: Any, deserialize: Any) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize
        # Per instance's channel, its multicallable with the method registered in the C core (as
        # a generated stub registers it): made once, not on every call.
        self._callables: dict[grpc.aio.Channel, grpc.aio.UnaryUnaryMultiCallable[Req, Resp]] = {}

    def _on(self, channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Req, Resp]:
        found = self._callables.get(channel)
        if found is None:
            if len(self._callables) > 64:  # instances come and go: forget the closed ones
                self._callables.clear()
            found = self._callables[channel] = channel.unary_unary(
                self._method.path,
                self._serialize,
                self._deserialize,
                _registered_method=True,  # type: ignore[call-arg]  # grpcio has it; its stubs not
            )
        return found

    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        async def run(call: _UnaryUnaryCall[Req, Resp]) -> Resp:
            state = _Attempting(self._channel, self._method, timeout, metadata)
            self._channel.peers.budget.record_request()
            code: grpc.StatusCode | None = None
            try:
                while True:
                    address, channel, breaker = await state.connect()
                    state.attempts += 1
                    attempt = self._on(channel)(
                        request,
                        timeout=state.attempt_timeout(),
                        metadata=state.metadata,
                        credentials=credentials,
                        wait_for_ready=wait_for_ready,
                        compression=compression,
                    )
                    call._call = attempt
                    if call.cancelled():
                        attempt.cancel()
                    try:
                        response = await attempt
                    except grpc.aio.AioRpcError as error:
                        code = error.code()
                        failure = state.failed(address, breaker, error)
                        if failure is not None:
                            raise failure from None
                        if not await state.may_retry():
                            raise state.unavailable() from None
                        continue
                    except asyncio.CancelledError:
                        breaker.record_ignored()
                        code = grpc.StatusCode.CANCELLED
                        raise
                    breaker.record_success()
                    code = grpc.StatusCode.OK
                    return response
            except BaseException as exc:
                state.done(_code_of(exc) or code, exc)
                raise
            finally:
                if code is grpc.StatusCode.OK:
                    state.done(code)

        return _UnaryUnaryCall(run)


class _UnaryStream(grpc.aio.UnaryStreamMultiCallable[Req, Resp]):
    def __init__(self, channel: GrpcChannel, method: _Method, serialize: Any, deserialize: Any) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize

    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryStreamCall[Req, Resp]:
        async def run(call: _UnaryStreamCall[Req, Resp]) -> AsyncIterator[Resp]:
            state = _Attempting(self._channel, self._method, timeout, metadata)
            self._channel.peers.budget.record_request()
            try:
                while True:
                    address, channel, breaker = await state.connect()
                    state.attempts += 1
                    attempt = channel.unary_stream(self._method.path, self._serialize, self._deserialize)(
                        request,
                        timeout=state.attempt_timeout(),
                        metadata=state.metadata,
                        credentials=credentials,
                        wait_for_ready=wait_for_ready,
                        compression=compression,
                    )
                    call._call = attempt
                    received = 0
                    try:
                        async for message in attempt:
                            received += 1
                            yield message
                    except grpc.aio.AioRpcError as error:
                        failure = state.failed(address, breaker, error)
                        if failure is not None:
                            raise failure from None
                        # Messages already handed over cannot be taken back: only a stream that
                        # had not started goes to another instance.
                        if received or not await state.may_retry():
                            raise state.unavailable() from None
                        continue
                    except (asyncio.CancelledError, GeneratorExit):
                        attempt.cancel()
                        breaker.record_ignored()
                        raise
                    breaker.record_success()
                    state.done(grpc.StatusCode.OK)
                    return
            except (asyncio.CancelledError, GeneratorExit) as exc:
                state.done(
                    grpc.StatusCode.CANCELLED, exc if isinstance(exc, asyncio.CancelledError) else None
                )
                raise
            except Exception as exc:
                state.done(_code_of(exc), exc)
                raise

        return _UnaryStreamCall(run)


async def _requests(source: AsyncIterator[Any] | Iterator[Any]) -> AsyncIterator[Any]:
    if hasattr(source, "__aiter__"):
        async for item in cast(AsyncIterator[Any], source):
            yield item
    else:
        for item in source:
            yield item


class _StreamUnary(grpc.aio.StreamUnaryMultiCallable[Req, Resp]):
    def __init__(self, channel: GrpcChannel, method: _Method, serialize: Any, deserialize: Any) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize

    def __call__(
        self,
        request_iterator: AsyncIterator[Req] | Iterator[Req] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.StreamUnaryCall[Req, Resp]:
        if request_iterator is None:
            raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")
        requests = request_iterator

        async def run(call: _StreamUnaryCall[Req, Resp]) -> Resp:
            # The requests can be read once: only the connection may be retried, never the call.
            state = _Attempting(self._channel, self._method, timeout, metadata)
            try:
                address, channel, breaker = await state.connect()
                attempt = channel.stream_unary(self._method.path, self._serialize, self._deserialize)(
                    _requests(requests),
                    timeout=state.attempt_timeout(),
                    metadata=state.metadata,
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                )
                call._call = attempt
                try:
                    response = cast(Resp, await attempt)
                except grpc.aio.AioRpcError as error:
                    state.attempts = 1
                    raise state.failed(address, breaker, error) or state.unavailable() from None
                except asyncio.CancelledError:
                    breaker.record_ignored()
                    raise
                breaker.record_success()
            except BaseException as exc:
                state.done(_code_of(exc), exc)
                raise
            state.done(grpc.StatusCode.OK)
            return response

        return _StreamUnaryCall(run)


class _StreamStream(grpc.aio.StreamStreamMultiCallable[Req, Resp]):
    def __init__(self, channel: GrpcChannel, method: _Method, serialize: Any, deserialize: Any) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize

    def __call__(
        self,
        request_iterator: AsyncIterator[Req] | Iterator[Req] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.StreamStreamCall[Req, Resp]:
        if request_iterator is None:
            raise TypeError("the kit's gRPC client takes a streaming call's requests as an iterator")
        requests = request_iterator

        async def run(call: _StreamStreamCall[Req, Resp]) -> AsyncIterator[Resp]:
            state = _Attempting(self._channel, self._method, timeout, metadata)
            try:
                address, channel, breaker = await state.connect()
                attempt = channel.stream_stream(self._method.path, self._serialize, self._deserialize)(
                    _requests(requests),
                    timeout=state.attempt_timeout(),
                    metadata=state.metadata,
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                )
                call._call = attempt
                try:
                    async for message in attempt:
                        yield message
                except grpc.aio.AioRpcError as error:
                    state.attempts = 1
                    raise state.failed(address, breaker, error) or state.unavailable() from None
                except (asyncio.CancelledError, GeneratorExit):
                    attempt.cancel()
                    breaker.record_ignored()
                    raise
                breaker.record_success()
            except (asyncio.CancelledError, GeneratorExit) as exc:
                state.done(
                    grpc.StatusCode.CANCELLED, exc if isinstance(exc, asyncio.CancelledError) else None
                )
                raise
            except Exception as exc:
                state.done(_code_of(exc), exc)
                raise
            state.done(grpc.StatusCode.OK)

        return _StreamStreamCall(run)


class GrpcChannel(grpc.aio.Channel):
    """Every instance of one service as one ``grpc.aio.Channel`` (module docstring); give it to a
    generated stub: ``InventoryStub(channel)``. ``credentials``: the TLS of ``grpcs://``
    instances (None: the system's CAs)."""

    def __init__(
        self,
        service: str,
        discovery: Discovery,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        budget: BudgetPolicy | None = None,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        propagate_authorization: bool = True,
        options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
    ) -> None:
        self.service = service
        self.discovery = discovery
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.peers = Peers(service, breaker, budget)
        self.tracing = tracing
        self.metrics = metrics
        self.credentials = credentials
        self.propagate_authorization = propagate_authorization
        self.options = tuple(options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self._methods: dict[str, _Method] = {}
        if metrics is not None:
            self.handled = metrics.counter(
                "grpc_client_handled_total",
                "gRPC calls made to other services, by service, method and status code.",
                ("grpc_service", "grpc_method", "grpc_code"),
            )
            self.latency = metrics.histogram(
                "grpc_client_handling_seconds",
                "Time from a gRPC call's start to its status, retries included.",
                ("grpc_service", "grpc_method"),
            )

    def __repr__(self) -> str:
        return f"<GrpcChannel {self.service!r} via {self.discovery.name}>"

    async def resolve(self) -> list[str]:
        addresses = await self.discovery.resolve(self.service)
        if not addresses:
            raise NoInstancesError(self.service, self.discovery.name)
        stale = [a for a in self._channels if a not in addresses]
        for address in stale:
            # An instance discovery no longer lists: its connection goes, in the background,
            # once the calls still on it have had STALE_GRACE seconds to finish.
            closing = asyncio.ensure_future(self._channels.pop(address).close(STALE_GRACE))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return addresses

    def channel_for(self, address: str) -> grpc.aio.Channel:
        """The channel of one instance (made on first use, kept open)."""
        found = self._channels.get(address)
        if found is None:
            target, tls = grpc_target(address)
            if tls:
                found = grpc.aio.secure_channel(
                    target, self.credentials or grpc.ssl_channel_credentials(), options=self.options
                )
            else:
                found = grpc.aio.insecure_channel(target, options=self.options)
            self._channels[address] = found
        return found

    def _method(self, path: str) -> _Method:
        found = self._methods.get(path)
        if found is None:
            found = self._methods[path] = _Method(path, self.service)
        return found

    # grpc.aio.Channel

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        return _UnaryUnary(self, self._method(method), request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
        return _UnaryStream(self, self._method(method), request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamUnaryMultiCallable[Any, Any]:
        return _StreamUnary(self, self._method(method), request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
        return _StreamStream(self, self._method(method), request_serializer, response_deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when a connection to any instance is; IDLE when none was made yet."""
        states = {c.get_state(try_to_connect) for c in self._channels.values()}
        for state in (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        ):
            if state in states:
                return state
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() is last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        """Connect to the instance the next call would go to."""
        state = _Attempting(self, self._method("/"), None, None)
        await state.connect()

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)
        await cancel_and_wait(*self._closing)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.close()
        return None
