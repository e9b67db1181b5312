"""Calling another service by name: discovery, round-robin, timeouts, retries, breakers, context.

:class:`ServiceClient` sends through one shared :class:`~edgeway.service.peer_http.PeerHttp`
(the gateway's upstream engine: a connection pool per peer instance, one set per process).
For each call it

1. resolves the service name through a :class:`~edgeway.service.discovery.Discovery`;
2. picks the next instance round-robin, skipping instances whose circuit breaker is open
   (one :class:`~edgeway.resilience.breaker.CircuitBreaker` per instance URL); when all are
   open it raises :class:`~edgeway.service.errors.CircuitOpenError` without sending anything;
3. sends the request with ``X-Request-ID``, ``traceparent`` (a CLIENT span, child of the
   current one) and the caller's ``Authorization`` header, unless the call sets its own;
4. retries on connection errors, timeouts and 502/503/504, with exponential backoff and full
   jitter, each time on the next instance — but only for idempotent methods (GET, HEAD,
   OPTIONS, PUT, DELETE). A POST or PATCH is retried only when the connection could not be
   opened at all, because then nothing was sent and a retry cannot apply it twice. When the
   last attempt still gets a 502/503/504, that response is returned as it is; when no attempt
   got any answer, :class:`~edgeway.service.errors.PeerUnavailableError` is raised;
5. inside a request that came with a deadline (``X-Edgeway-Deadline-Ms``, see
   :mod:`edgeway.service.deadline`) sends each attempt with the time left in that header, gives
   the attempt no longer than that, and retries only while the backoff fits in it; when it runs
   out, :class:`~edgeway.service.errors.DeadlineExceededError` (504) is raised.

A 5xx answer or a transport error counts as a failure for the instance's breaker; any other
answer (4xx included: the peer is healthy, the request was wrong) as a success.

A call answers a :class:`~edgeway.service.peer_http.PeerResponse` (status, headers, the whole
body; ``json()``, ``text``, ``raise_for_status()``). Its keyword arguments are ``json=`` (a
body sent as JSON), ``content=`` (bytes or text as they are), ``params=`` (query values) and
``timeout=`` (seconds, for this call instead of the client's).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry.trace import Span, SpanKind
from pydantic import TypeAdapter

from edgeway.http.errors import UpstreamError
from edgeway.http.outgoing import UnsafeRequest, check_header, check_method, request_target
from edgeway.observability.context import current_hop, span_traceparent
from edgeway.observability.ids import parse_traceparent
from edgeway.observability.logs import current_request_id
from edgeway.observability.tracing import Tracing, outgoing_traceparent
from edgeway.resilience.breaker import BreakerPolicy, CircuitBreaker
from edgeway.resilience.deadline import DEADLINE_HEADER as DEADLINE
from edgeway.resilience.retry import IDEMPOTENT_METHODS as IDEMPOTENT_WIRE_METHODS
from edgeway.resilience.retry import full_jitter
from edgeway.service.deadline import deadline_at
from edgeway.service.discovery import Discovery
from edgeway.service.errors import (
    DeadlineExceededError,
    NoInstancesError,
    PeerResponseError,
    PeerUnavailableError,
)
from edgeway.service.middleware import incoming_authorization
from edgeway.service.peer_http import (
    PeerHeaders,
    PeerHttp,
    PeerResponse,
    ResponseBodyTooLarge,
    encode_body,
    nothing_sent,
    with_params,
)
from edgeway.service.peers import Peers

__all__ = [
    "IDEMPOTENT_METHODS",
    "PeerResponse",
    "RetryPolicy",
    "ServiceClient",
    "UnsafeRequest",
    "propagation_headers",
]

T = TypeVar("T")

# The one list of methods that may be sent again (edgeway.resilience.retry), as str: a second
# list here had drifted from it (no TRACE).
IDEMPOTENT_METHODS: Final = frozenset(method.decode("ascii") for method in IDEMPOTENT_WIRE_METHODS)
DEADLINE_HEADER = DEADLINE.decode()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # in total, the first one included
    backoff: float = 0.05  # seconds before the first retry; doubles each time
    max_backoff: float = 1.0
    methods: frozenset[str] = IDEMPOTENT_METHODS
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1 (the first call)")

    def delay(self, retry: int) -> float:
        return full_jitter(retry, self.backoff, self.max_backoff)


def http_client(tls: ssl.SSLContext | None = None) -> PeerHttp:
    """The HTTP client a service's clients share (a connection pool per peer instance, no cap on
    open connections). ``tls``: the TLS context of calls to ``https://`` peers (a CA bundle, a
    client certificate for mTLS: :func:`edgeway.service.tls.client_tls_context`); None: the
    system's CAs."""
    return PeerHttp(tls=tls)


@dataclass(frozen=True, slots=True)
class _Call:
    """What one call sends, the same on every attempt."""

    method: str
    path: str  # the request target: path and query, encoded
    body: bytes | None
    content_type: str | None
    timeout: float


def propagation_headers(
    given: Mapping[str, str] | None, *, authorization: bool = True, span: Span | None = None
) -> dict[str, str]:
    """``given`` (lower-cased) with what a call made now carries to the next hop: the request id,
    the trace context (of ``span``, the call's CLIENT span, when given; else of the current span)
    and, with ``authorization``, the caller's ``Authorization``. The HTTP and gRPC clients send the
    same (:mod:`edgeway.service.grpc.client` as metadata)."""
    headers = {k.lower(): v for k, v in (given or {}).items()}
    request_id = current_request_id()
    if request_id is not None:
        headers.setdefault("x-request-id", request_id)
    # The current span is the CLIENT span when tracing is on, else the request's span. It
    # replaces a traceparent the caller gave in the same trace (a saga step passes its own
    # span's, which is this CLIENT span's parent); one of another trace is the caller's choice.
    traceparent = span_traceparent(span).encode().decode() if span is not None else outgoing_traceparent()
    if traceparent is not None:
        theirs = parse_traceparent(headers.get("traceparent", "").encode())
        if theirs is None or theirs.trace_id.decode() == traceparent[3:35]:
            headers["traceparent"] = traceparent
            tracestate = current_hop().tracestate
            if tracestate is not None:
                headers.setdefault("tracestate", tracestate)
    if authorization:
        incoming = incoming_authorization.get()
        if incoming is not None:
            headers.setdefault("authorization", incoming)
    return headers


class ServiceClient:
    def __init__(
        self,
        service: str,
        discovery: Discovery,
        *,
        http: PeerHttp | None = None,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        tracing: Tracing | None = None,
        propagate_authorization: bool = True,
    ) -> None:
        self.service = service
        self.discovery = discovery
        self.retry = retry if retry is not None else RetryPolicy()
        # Breakers made from now on use the policy; setting breaker_policy later (the shop's
        # orders service does, from its settings) reaches them too.
        self._peers = Peers(service, breaker)
        self.tracing = tracing
        self.propagate_authorization = propagate_authorization
        if timeout <= 0:
            raise ValueError(f"a client timeout is a number of seconds above 0, got {timeout}")
        self._timeout = float(timeout)
        self._owns_http = http is None
        self._http = http if http is not None else http_client()

    def __repr__(self) -> str:
        return f"<ServiceClient {self.service!r} via {self.discovery.name}>"

    @property
    def breaker_policy(self) -> BreakerPolicy:
        return self._peers.breaker_policy

    @breaker_policy.setter
    def breaker_policy(self, policy: BreakerPolicy) -> None:
        self._peers.breaker_policy = policy

    def breaker(self, url: str) -> CircuitBreaker:
        return self._peers.breaker(url)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> PeerResponse:
        """Send a request to an instance of the service; ``path`` starts with ``/``.

        A path that does not, a method or header name that is not a token, or a header value
        with a control character (CR, LF, NUL...) raises :class:`UnsafeRequest` (a ValueError)
        before anything is sent: it is the caller's mistake, never the peer's failure (no
        breaker failure, no retry). What else a request line cannot carry in ``path`` (a space,
        non-ASCII) is percent-encoded, so a value pasted into it stays a value."""
        method = method.upper()
        path = request_target(with_params(path, params)).decode("ascii")
        check_method(method)
        for name, value in (headers or {}).items():
            check_header(name, value)
        body, content_type = encode_body(json, content)
        call = _Call(method, path, body, content_type, self._timeout if timeout is None else timeout)
        urls = await self.discovery.resolve(self.service)
        if not urls:
            raise NoInstancesError(self.service, self.discovery.name)
        idempotent = method in self.retry.methods
        span_cm = (
            self.tracing.tracer.start_as_current_span(f"{method} {self.service}", kind=SpanKind.CLIENT)
            if self.tracing is not None
            else None
        )
        if span_cm is None:
            return await self._attempts(call, urls, idempotent, headers)
        with span_cm as span:
            span.set_attribute("peer.service", self.service)
            span.set_attribute("http.request.method", method)
            response = await self._attempts(call, urls, idempotent, headers)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _attempts(
        self, call: _Call, urls: list[str], idempotent: bool, headers: Mapping[str, str] | None
    ) -> PeerResponse:
        method, path = call.method, call.path
        outgoing = self._headers(headers)
        if call.content_type is not None:
            outgoing.setdefault("content-type", call.content_type)
        # The caller's deadline bounds every attempt and is passed on, reduced by the time spent;
        # a deadline the call sets itself is sent as it is.
        at = deadline_at()
        pass_deadline = at is not None and DEADLINE_HEADER not in outgoing
        last_error = "no attempt made"
        for attempt in range(self.retry.attempts):
            if attempt:
                delay = self.retry.delay(attempt - 1)
                if at is not None and time.monotonic() + delay >= at:
                    raise self._deadline_error(method, path, f"no time left to retry; last: {last_error}")
                await asyncio.sleep(delay)
            url = self._peers.pick(urls)
            breaker = self.breaker(url)
            if at is not None:
                left = at - time.monotonic()
                if left <= 0:
                    raise self._deadline_error(method, path, "it had passed before the call")
                if pass_deadline:
                    outgoing[DEADLINE_HEADER] = str(max(1, int(left * 1000)))
            try:
                if at is None:
                    status, raw, data = await self._http.send(
                        method, url, path, outgoing, call.body, call.timeout
                    )
                else:
                    async with asyncio.timeout(at - time.monotonic()):
                        status, raw, data = await self._http.send(
                            method, url, path, outgoing, call.body, call.timeout
                        )
            except TimeoutError:
                # Our budget, not the peer's fault: no breaker failure, no retry.
                raise self._deadline_error(method, path, f"it ran out waiting for {url}") from None
            except ResponseBodyTooLarge as exc:
                # The instance answered (a healthy one); another would answer the same.
                breaker.record_success()
                raise PeerUnavailableError(self.service, f"{method} {self.service}{path}: {exc}") from exc
            except UpstreamError as exc:
                breaker.record_failure()
                last_error = f"{url}: {type(exc).__name__}: {exc}"
                if idempotent or nothing_sent(exc):
                    continue
                raise PeerUnavailableError(
                    self.service, f"{method} {self.service}{path} failed: {last_error}"
                ) from exc
            if status >= 500:
                breaker.record_failure()
            else:
                breaker.record_success()
            if idempotent and status in self.retry.statuses and attempt + 1 < self.retry.attempts:
                last_error = f"{url}: {status}"
                continue
            return PeerResponse(
                status,
                PeerHeaders(raw),
                data,
                service=self.service,
                instance=url,
                method=method,
                path=path,
            )
        raise PeerUnavailableError(
            self.service,
            f"{method} {self.service}{path} failed after {self.retry.attempts} attempt(s); "
            f"last: {last_error}",
        )

    def _deadline_error(self, method: str, path: str, what: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            self.service, f"{method} {self.service}{path} not completed: the request's deadline {what}"
        )

    def _headers(self, given: Mapping[str, str] | None) -> dict[str, str]:
        return propagation_headers(given, authorization=self.propagate_authorization)

    # conveniences

    async def get(self, path: str, **kwargs: Any) -> PeerResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> PeerResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> PeerResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> PeerResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> PeerResponse:
        return await self.request("DELETE", path, **kwargs)

    async def call(self, method: str, path: str, model: type[T], **kwargs: Any) -> T:
        """A typed call: the JSON body validated as ``model``; an error status raises PeerResponseError."""
        response = await self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise PeerResponseError(self.service, response.status_code, response.text)
        return TypeAdapter(model).validate_json(response.content)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
