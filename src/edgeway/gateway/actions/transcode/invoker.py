"""The unary gRPC call behind a transcoded request, on grpcio's asyncio channels (the streaming
ones are :mod:`.streaming`'s, on the same channels, instance choice and guard).

The instance is the gateway's choice, as for any other call to the service: its cluster's
balancer over the instances from ``services:`` (and discovery), through the service's guard when
it configures resilience (breakers, outlier ejection, health checks), which is told how each
call went (its gRPC status as the HTTP status it stands for; no answer as a failure). Each
instance gets one channel, kept open between calls (a :class:`GrpcChannels` component closes
them when the gateway stops); an ``https://`` instance is reached over TLS with the service's CA
bundle and client certificate when its ``tls`` block names them.

What the call carries: the deadline (the route's or call's ``timeout``, else the service's
``timeouts.total``; shortened by an aggregate's deadline) as gRPC's own ``grpc-timeout``, and as
metadata the request id, a ``traceparent`` with a new span of the request's trace, and the
client headers the route forwards (by default the verified identity the auth filter sets,
``x-edgeway-subject``...).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.telemetry.meters import ServiceMeter
from edgeway.gateway.upstream.clusters import Cluster, ClusterChange, Endpoint
from edgeway.gateway.upstream.config import Service
from edgeway.gateway.upstream.resilient import CircuitOpen, NoInstance, Refused, ServiceOverloaded
from edgeway.http.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from edgeway.http.grpc_wire import CHANNEL_OPTIONS, http_status_of
from edgeway.resilience.errors import NoInstanceAvailable, Overloaded
from edgeway.resilience.guard import InstanceState, ServiceGuard

__all__ = ["CallBook", "GrpcChannels", "GrpcFailure", "StreamStub", "call_unary", "metadata_of"]

# Seconds the calls on the channel of an instance that left its service get before it closes.
STALE_GRACE = 5.0
_LOCAL_DEADLINE = "Deadline Exceeded"  # grpcio's details when the client's deadline passed
# grpcio's words when no connection could be made (refused, DNS, TLS): nothing was sent.
_NO_CONNECTION = ("failed to connect", "connection refused", "dns resolution")

StreamStub = (
    grpc.aio.UnaryStreamMultiCallable[Message, Message]
    | grpc.aio.StreamUnaryMultiCallable[Message, Message]
    | grpc.aio.StreamStreamMultiCallable[Message, Message]
)

# Metadata gRPC itself writes, or forbids from applications.
_RESERVED = frozenset({"te", "content-type", "user-agent", "host", "connection", "grpc-timeout"})


@dataclass(slots=True)
class GrpcFailure(Exception):
    """The call ended without a message: the status the service (or gRPC) gave."""

    code: grpc.StatusCode
    details: str
    instance: str
    trailers: Sequence[tuple[str, str | bytes]] = ()

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    @property
    def status(self) -> int:
        return http_status_of(self.code.value[0])

    def transport_error(self, timeout: float) -> UpstreamError | None:
        """The failure as the gateway's own, when no service answered: our deadline passed
        (a timeout), or no connection could be made; None for a status a service sent."""
        if self.code is grpc.StatusCode.DEADLINE_EXCEEDED and self.details == _LOCAL_DEADLINE:
            return UpstreamTimeout("total", timeout, instance=self.instance)
        lowered = self.details.lower()
        if self.code is grpc.StatusCode.UNAVAILABLE and any(words in lowered for words in _NO_CONNECTION):
            return UpstreamConnectError(self.details, instance=self.instance)
        return None


class GrpcChannels:
    """One channel per instance of the services the gateway reaches over gRPC (a component:
    closed when the gateway stops). The channel of an instance that leaves its service
    (discovery) is closed after :data:`STALE_GRACE`, so the calls on it can finish."""

    def __init__(self, services: Mapping[str, Service], clusters: Mapping[str, Cluster]) -> None:
        self._services = services
        self._clusters = clusters
        self._watching: dict[str, Cluster] = {}  # clusters whose changes this listens to
        self._closing: set[asyncio.Task[None]] = set()
        self._channels: dict[tuple[str, str, int, bool], grpc.aio.Channel] = {}
        # A multicallable per channel and method, made once: making one costs as much as a call.
        self._stubs: dict[
            tuple[str, str, int, bool, str], grpc.aio.UnaryUnaryMultiCallable[Message, Message]
        ] = {}
        self._streams: dict[tuple[str, str, int, bool, str], StreamStub] = {}

    def __repr__(self) -> str:
        return f"<GrpcChannels open={len(self._channels)}>"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        # Clusters outlive this gateway (live reload): stop listening to them.
        for cluster in self._watching.values():
            if self._changed in cluster.listeners:
                cluster.listeners.remove(self._changed)
        self._watching = {}
        channels, self._channels = list(self._channels.values()), {}
        self._stubs = {}
        self._streams = {}
        for channel in channels:
            await channel.close(grace=1.0)
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _changed(self, cluster: Cluster, change: ClusterChange) -> None:
        for ep in change.removed:
            key = (cluster.name, ep.host, ep.port, ep.tls is not None)
            channel = self._channels.pop(key, None)
            if channel is None:
                continue
            self._stubs = {k: v for k, v in self._stubs.items() if k[:4] != key}
            self._streams = {k: v for k, v in self._streams.items() if k[:4] != key}
            task = asyncio.get_running_loop().create_task(channel.close(grace=STALE_GRACE))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    def channel(self, service: str, ep: Endpoint) -> grpc.aio.Channel:
        key = (service, ep.host, ep.port, ep.tls is not None)
        found = self._channels.get(key)
        if found is None:
            if service not in self._watching and service in self._clusters:
                cluster = self._watching[service] = self._clusters[service]
                cluster.listeners.append(self._changed)
            target = f"{ep.host}:{ep.port}"
            if ep.tls is None:
                found = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                found = grpc.aio.secure_channel(
                    target, self._credentials(service), options=self._tls_options(service)
                )
            self._channels[key] = found
        return found

    def stub(
        self, service: str, ep: Endpoint, method: MethodInfo
    ) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        """The unary multicallable of ``method`` on ``ep``'s channel."""
        key = (service, ep.host, ep.port, ep.tls is not None, method.path)
        found = self._stubs.get(key)
        if found is None:
            found = self._stubs[key] = self.channel(service, ep).unary_unary(
                method.path,
                request_serializer=_serialize,
                response_deserializer=method.output_type.FromString,
            )
        return found

    def stream_stub(self, service: str, ep: Endpoint, method: MethodInfo) -> StreamStub:
        """The multicallable of a streaming ``method`` on ``ep``'s channel (its kind by which
        side streams)."""
        key = (service, ep.host, ep.port, ep.tls is not None, method.path)
        found = self._streams.get(key)
        if found is None:
            channel = self.channel(service, ep)
            out = method.output_type.FromString
            if not method.client_streaming:
                found = channel.unary_stream(method.path, _serialize, out)
            elif method.server_streaming:
                found = channel.stream_stream(method.path, _serialize, out)
            else:
                found = channel.stream_unary(method.path, _serialize, out)
            self._streams[key] = found
        return found

    def _credentials(self, service: str) -> grpc.ChannelCredentials:
        tls = self._services[service].tls if service in self._services else None
        if tls is None:
            return grpc.ssl_channel_credentials()

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as file:
                return file.read()

        chain = read(tls.cert)
        return grpc.ssl_channel_credentials(
            root_certificates=read(tls.ca), private_key=read(tls.key) or chain, certificate_chain=chain
        )

    def _tls_options(self, service: str) -> tuple[tuple[str, Any], ...]:
        tls = self._services[service].tls if service in self._services else None
        if tls is not None and tls.server_name:
            return (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", tls.server_name))
        return CHANNEL_OPTIONS


def metadata_of(pairs: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header pairs as gRPC metadata: lower-case ASCII keys, printable values; what gRPC
    reserves (and ``-bin`` keys, which would need base64) is left out."""
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        key = name.decode("latin-1").lower()
        if key in _RESERVED or key.startswith(("grpc-", ":")) or key.endswith("-bin"):
            continue
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            continue
        if text.isprintable():
            out.append((key, text))
    return out


def metadata_of_lines(lines: bytes) -> list[tuple[str, str]]:
    """Header lines (``name: value\r\n``, as an HTTP call's headers are built) as gRPC
    metadata: what a gRPC call carries where an HTTP call carries those headers."""
    return metadata_of(
        [
            (name, value)
            for line in lines.split(b"\r\n")
            if line
            for name, _, value in (line.partition(b": "),)
        ]
    )


def _pick(
    cluster: Cluster, guard: ServiceGuard[Endpoint] | None, tried: list[Endpoint]
) -> tuple[Endpoint, InstanceState[Endpoint] | None]:
    try:
        if guard is None:
            return cluster.pick(), None
        state = guard.pick(cluster.balancer, tried)
    except NoInstanceAvailable:
        hint = guard.retry_after_hint() if guard is not None else None
        raise NoInstance(f"no available instance of service {cluster.name!r}", hint) from None
    return state.member, state


def _retry_delay(
    guard: ServiceGuard[Endpoint] | None,
    method: MethodInfo,
    outcome: int | BaseException,
    attempt: int,
    remaining: float,
    tried: list[Endpoint],
) -> float | None:
    """Backoff before another attempt, or None. As for HTTP calls (the service's ``retry``):
    a call never sent (no connection) may always go elsewhere; one answered with a `retry_on`
    status, or timed out, only when the method is declared safe to repeat."""
    if guard is None:
        return None
    if isinstance(outcome, UpstreamConnectError):
        return guard.retry_delay(attempt, remaining, tried, "error")
    if not method.idempotent:
        return None
    if isinstance(outcome, int):
        return guard.retry_delay(attempt, remaining, tried, "status") if outcome in guard.retry_on else None
    return None  # our own deadline: nothing is left to retry with


class CallBook:
    """One call's admission and bookkeeping, shared by the unary and streaming calls: the
    service's guard admits it (:func:`_admit`), picks each attempt's instance and is told how
    each went, and the service's meter counts the attempts and the call. ``outcome`` is the
    status the call ended with, an exception, or 0 while it has none (a caller that gave up)."""

    __slots__ = ("_admitted", "cluster", "guard", "meter", "outcome", "started", "tried", "until")

    def __init__(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        meter: ServiceMeter | None,
        timeout: float,
    ) -> None:
        self.cluster = cluster
        self.guard = guard
        self.meter = meter
        self.started = time.perf_counter()
        self.until = self.started + timeout
        self.tried: list[Endpoint] = []
        self.outcome: int | BaseException = 0
        self._admitted = False

    async def admit(self) -> None:
        if self.guard is not None:
            try:
                await _admit(self.guard, self.cluster.name)
            except Refused as exc:
                self.outcome = exc
                raise
            self._admitted = True

    def pick(self) -> tuple[Endpoint, InstanceState[Endpoint] | None]:
        try:
            ep, state = _pick(self.cluster, self.guard, self.tried)
        except Refused as exc:
            self.outcome = exc
            raise
        self.tried.append(ep)
        return ep, state

    def failed(self, exc: grpc.aio.AioRpcError, ep: Endpoint, timeout: float) -> GrpcFailure:
        """The attempt's error status as a failure; ``outcome`` what it stands for."""
        trailers = tuple(exc.trailing_metadata() or ())
        failure = GrpcFailure(exc.code(), exc.details() or "", ep.label, trailers)
        transport = failure.transport_error(timeout)
        self.outcome = transport if transport is not None else failure.status
        return failure

    def retry_delay(self, method: MethodInfo, attempt: int) -> float | None:
        remaining = self.until - time.perf_counter()
        return _retry_delay(self.guard, method, self.outcome, attempt, remaining, self.tried)

    def attempt_over(self, state: InstanceState[Endpoint] | None, ep: Endpoint, began: float) -> None:
        _attempt_over(self.guard, state, self.meter, ep, self.outcome, time.perf_counter() - began)

    def close(self) -> None:
        guard = self.guard
        if self._admitted:
            assert guard is not None
            outcome = self.outcome
            if outcome != 0 and not isinstance(outcome, Refused):
                guard.finish(*_verdict(outcome))
            if guard.limiter is not None:
                guard.limiter.release()
        if self.meter is not None:
            self.meter.call(self.outcome, time.perf_counter() - self.started)


async def call_unary(
    channels: GrpcChannels,
    cluster: Cluster,
    guard: ServiceGuard[Endpoint] | None,
    method: MethodInfo,
    request: Message,
    *,
    timeout: float,
    metadata: Sequence[tuple[str, str]],
    meter: ServiceMeter | None = None,
) -> Message:
    """Call ``method`` on an instance of ``cluster``, retrying where the service's ``retry``
    allows; :class:`GrpcFailure` for an error status, :class:`NoInstance` when none is
    available. ``meter``: the service's metrics, told each attempt's and the call's outcome
    (the status the gRPC status stands for, or a timeout or connection failure)."""
    book = CallBook(cluster, guard, meter, timeout)
    try:
        await book.admit()
        for attempt in itertools.count():
            ep, state = book.pick()
            stub = channels.stub(cluster.name, ep, method)
            began = time.perf_counter()
            book.outcome = 0
            ep.outstanding += 1
            try:
                left = max(book.until - began, 0.001)
                reply: Message = await stub(request, timeout=left, metadata=tuple(metadata))
                book.outcome = 200
                return reply
            except grpc.aio.AioRpcError as exc:
                failure = book.failed(exc, ep, timeout)
                delay = book.retry_delay(method, attempt)
                if delay is None:
                    raise failure from None
            finally:
                ep.outstanding -= 1
                book.attempt_over(state, ep, began)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # itertools.count() never ends
    finally:
        book.close()


async def _admit(guard: ServiceGuard[Endpoint], service: str) -> None:
    """The service's admission, as for its HTTP calls: a slot of its ``concurrency`` bound
    (waiting in its queue), then its service-wide breaker; the call counts in its retry budget."""
    limiter = guard.limiter
    if limiter is not None and not limiter.try_acquire():
        try:
            await limiter.acquire()
        except Overloaded as exc:
            guard.telemetry.shed()
            raise ServiceOverloaded(
                f"service {service!r} is at its concurrency limit: {exc}", exc.retry_after
            ) from None
    breaker = guard.breaker
    if breaker is not None and not breaker.allow():
        if limiter is not None:
            limiter.release()
        raise CircuitOpen(f"the circuit breaker of service {service!r} is open", breaker.retry_after)
    if guard.budget is not None:
        guard.budget.record_request()


def _verdict(outcome: int | BaseException) -> tuple[int, bool]:
    """(status, error) for the guard: no answer (no connection, our own deadline) counts against
    the instance; an error status is the request's fault, answered by a healthy instance."""
    return (outcome, False) if isinstance(outcome, int) else (0, True)


def _attempt_over(
    guard: ServiceGuard[Endpoint] | None,
    state: InstanceState[Endpoint] | None,
    meter: ServiceMeter | None,
    ep: Endpoint,
    outcome: int | BaseException,
    seconds: float,
) -> None:
    if guard is not None and state is not None and outcome != 0:
        guard.report(state, *_verdict(outcome))
    if meter is not None:
        meter.attempt(ep.label, outcome, seconds)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
