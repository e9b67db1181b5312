"""Errors on the gRPC side: the kit's errors as status codes, with rich details, and back.

A handler raises what an HTTP endpoint raises (a :class:`~edgeway.service.problems.Problem`,
the kit's identity, deadline and peer errors, a pydantic ``ValidationError``); the server's
interceptor answers it with the status code below, a message, and a ``google.rpc.Status`` in
the ``grpc-status-details-bin`` trailer (the standard "richer error model": what grpcurl, the
Go and Java clients and :class:`PeerStatusError` read) carrying

- ``RequestInfo``: the request id to quote;
- ``ErrorInfo``: ``reason`` (the kit's reason code upper-cased, ``MISSING``, ``EXPIRED``; a
  problem's ``reason`` extension, else its status code's name), ``domain`` (the service),
  ``metadata`` (a problem's other extensions and its ``type`` when it has one);
- ``BadRequest``: one field violation per invalid field (a pydantic ``ValidationError``);
- ``RetryInfo``: when to try again (every breaker open).

==========================================  ==================================================
raised                                      status code
==========================================  ==================================================
``Problem(400/422)``, ``ValidationError``,  ``INVALID_ARGUMENT``
a request that is not the method's message
``Problem(404/410)``                        ``NOT_FOUND``
``Problem(409)``                            ``ABORTED`` (a conflict: retry at a higher level)
``Problem(412)``, other 4xx                 ``FAILED_PRECONDITION``
``Problem(429)``                            ``RESOURCE_EXHAUSTED``
``AuthenticationError``, ``Problem(401)``   ``UNAUTHENTICATED``
``PermissionDeniedError``, ``Problem(403)`` ``PERMISSION_DENIED``
``DeadlineExceededError``, ``Problem(504)`` ``DEADLINE_EXCEEDED``
``PeerError``, ``DiscoveryError``,          ``UNAVAILABLE``
``JwksUnavailableError``, ``Problem(502/503)``
``NotImplementedError``, ``Problem(501)``   ``UNIMPLEMENTED``
anything else                               ``INTERNAL``, saying nothing of the internals
==========================================  ==================================================

:func:`http_status` maps a code back to the HTTP status it stands for (the access log's
``status``, :attr:`PeerStatusError.status`), as grpc-gateway and Google's APIs do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import pydantic
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message

from edgeway.http.grpc_wire import DETAILS_KEY, http_status_of
from edgeway.service.errors import (
    AuthenticationError,
    CircuitOpenError,
    DeadlineExceededError,
    DiscoveryError,
    JwksUnavailableError,
    PeerError,
    PeerResponseError,
    PermissionDeniedError,
)
from edgeway.service.problems import Problem

__all__ = [
    "DETAILS_KEY",
    "INTERNAL_MESSAGE",
    "Answer",
    "PeerStatusError",
    "answer_for",
    "code_for_status",
    "http_status",
    "rich_status",
]

INTERNAL_MESSAGE = "an unexpected error occurred; quote the request id when reporting it"

_HTTP_OF_CODE: dict[grpc.StatusCode, int] = {code: http_status_of(code.value[0]) for code in grpc.StatusCode}

_CODE_OF_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.NOT_FOUND,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    416: grpc.StatusCode.OUT_OF_RANGE,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status ``code`` stands for (OK 200, NOT_FOUND 404, UNAVAILABLE 503...)."""
    return _HTTP_OF_CODE.get(code, 500)


def code_for_status(status: int) -> grpc.StatusCode:
    """The status code an HTTP error status becomes (see the module docstring)."""
    found = _CODE_OF_HTTP.get(status)
    if found is not None:
        return found
    if 400 <= status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True, slots=True)
class Answer:
    """How a call that raised is answered: its code, its message and its rich details."""

    code: grpc.StatusCode
    message: str
    details: tuple[Message, ...] = ()
    unexpected: bool = False  # an error the kit does not know: logged with its traceback


def _info(reason: str, service: str, metadata: Mapping[str, Any] | None = None) -> Message:
    return error_details_pb2.ErrorInfo(
        reason=reason.upper().replace("-", "_"),
        domain=service,
        metadata={str(k): _text(v) for k, v in (metadata or {}).items()},
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _violations(errors: Iterable[Mapping[str, Any]]) -> Message:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=".".join(str(p) for p in err.get("loc", ())), description=str(err.get("msg", ""))
            )
            for err in errors
        ]
    )


def answer_for(exc: BaseException, service: str) -> Answer:
    """How the kit answers ``exc`` raised by a handler of ``service`` (module docstring)."""
    if isinstance(exc, Problem):
        code = code_for_status(exc.status)
        message = exc.detail or exc.title or str(exc)
        reason = exc.extensions.get("reason")
        extensions = {k: v for k, v in exc.extensions.items() if k not in ("errors", "reason")}
        if exc.type != "about:blank":
            extensions["type"] = exc.type
        details: list[Message] = [_info(str(reason) if reason else code.name, service, extensions)]
        errors = exc.extensions.get("errors")
        if isinstance(errors, list) and all(isinstance(e, Mapping) for e in errors):
            details.append(_violations(errors))
        return Answer(code, message, tuple(details))
    if isinstance(exc, AuthenticationError):
        return Answer(grpc.StatusCode.UNAUTHENTICATED, str(exc), (_info(exc.reason, service),))
    if isinstance(exc, PermissionDeniedError):
        return Answer(grpc.StatusCode.PERMISSION_DENIED, str(exc), (_info("forbidden", service),))
    if isinstance(exc, DeadlineExceededError):
        return Answer(
            grpc.StatusCode.DEADLINE_EXCEEDED, str(exc), (_info("deadline", service, {"peer": exc.service}),)
        )
    if isinstance(exc, CircuitOpenError):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(exc.retry_after * 1000)))
        return Answer(
            grpc.StatusCode.UNAVAILABLE,
            str(exc),
            (
                _info("circuit_open", service, {"peer": exc.service}),
                error_details_pb2.RetryInfo(retry_delay=delay),
            ),
        )
    if isinstance(exc, PeerError | DiscoveryError):
        return Answer(
            grpc.StatusCode.UNAVAILABLE,
            str(exc),
            (_info("peer_unavailable", service, {"peer": exc.service}),),
        )
    if isinstance(exc, JwksUnavailableError):
        return Answer(grpc.StatusCode.UNAVAILABLE, str(exc), (_info("jwks_unavailable", service),))
    if isinstance(exc, pydantic.ValidationError):
        errors = exc.errors()
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in errors[:5]
        )
        return Answer(
            grpc.StatusCode.INVALID_ARGUMENT,
            _clip(summary) or "the request is not valid",
            (_info("invalid_request", service), _violations(errors)),
        )
    if isinstance(exc, DecodeError):
        return Answer(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message of this method: {_clip(str(exc))}",
            (_info("malformed_message", service),),
        )
    if isinstance(exc, NotImplementedError):
        return Answer(grpc.StatusCode.UNIMPLEMENTED, "this method is not implemented")
    return Answer(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, unexpected=True)


def _clip(text: str, limit: int = 500) -> str:
    # A message may quote the input; a status should not echo a megabyte back.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rich_status(
    code: grpc.StatusCode, message: str, details: Iterable[Message], request_id: str | None
) -> bytes:
    """The serialized ``google.rpc.Status`` for the ``grpc-status-details-bin`` trailer."""
    packed: list[any_pb2.Any] = []
    if request_id is not None:
        packed.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    packed.extend(_pack(d) for d in details)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return bytes(status.SerializeToString())


def _pack(message: Message) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped


class PeerStatusError(PeerResponseError):
    """A peer answered a gRPC call with an error status; raised by the kit's gRPC client.

    ``code`` is the status code, ``status`` the HTTP status it stands for (so code that handles
    :class:`~edgeway.service.errors.PeerResponseError` for HTTP peers handles it too), and what the
    peer put in its rich status: ``reason`` (``ErrorInfo``), ``request_id`` (``RequestInfo``, or
    the ``x-request-id`` trailer), ``violations`` (``BadRequest``: field, description)."""

    def __init__(
        self,
        service: str,
        method: str,
        code: grpc.StatusCode,
        message: str,
        trailing: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__(service, http_status(code), message)
        self.args = (f"{service} answered {method} with {code.name}: {message[:200]}",)
        self.method = method
        self.code = code
        self.message = message
        self.reason: str | None = None
        self.request_id: str | None = None
        self.retry_after: float | None = None
        self.violations: list[tuple[str, str]] = []
        self.metadata: dict[str, str] = {}
        for key, value in trailing:
            if key == DETAILS_KEY and isinstance(value, bytes):
                self._read_details(value)
            elif key == "x-request-id" and isinstance(value, str) and self.request_id is None:
                self.request_id = value

    def _read_details(self, raw: bytes) -> None:
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except DecodeError:
            return  # a peer's malformed trailer: the code and message still say what happened
        for packed in status.details:
            info = error_details_pb2.ErrorInfo()
            request = error_details_pb2.RequestInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if packed.Unpack(info):
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif packed.Unpack(request):
                self.request_id = request.request_id
            elif packed.Unpack(bad):
                self.violations = [(v.field, v.description) for v in bad.field_violations]
            elif packed.Unpack(retry):
                self.retry_after = retry.retry_delay.ToMilliseconds() / 1000
