"""RFC 9457 problem details: every error a service returns has the same JSON shape.

``Content-Type: application/problem+json`` and a body with ``type``, ``title``, ``status``,
``detail``, ``instance`` (the request path) and ``request_id``, plus any extension members.
:func:`install_problem_handlers` makes FastAPI's own errors (404, 405, validation) and the
service kit's errors use it, and the request middleware turns an unhandled exception into a
500 that says nothing about the internals (the traceback goes to the log, with the request id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeway.observability.ids import new_request_id, valid_request_id
from edgeway.observability.logs import current_request_id, request_id_var
from edgeway.service.errors import (
    AuthenticationError,
    CircuitOpenError,
    DeadlineExceededError,
    DiscoveryError,
    JwksUnavailableError,
    PeerError,
    PermissionDeniedError,
)

__all__ = [
    "PROBLEM_JSON",
    "LastResortMiddleware",
    "Problem",
    "answer_problem",
    "install_problem_handlers",
    "internal_error_response",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("edgeway.service")


class Problem(Exception):
    """Raise from a handler to answer with a problem response."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": type,
        # For about:blank the RFC asks for the status phrase as the title.
        "title": title or _phrase(status),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    body.update(extensions)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def answer_problem(request: Request, problem: Problem) -> Response:
    """The response to ``request`` that ``problem`` describes (for an exception handler that
    translates another error into a :class:`Problem`)."""
    return problem_response(
        problem.status,
        problem.detail,
        title=problem.title,
        type=problem.type,
        instance=request.url.path,
        headers=problem.headers,
        **problem.extensions,
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)  # registered for Problem only
    return answer_problem(request, exc)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _phrase(exc.status_code) else None
    return problem_response(
        exc.status_code, detail, instance=request.url.path, headers=getattr(exc, "headers", None)
    )


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_validation_error(err) for err in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['msg']}" if e["field"] else str(e["msg"]) for e in errors[:5])
    return problem_response(
        422,
        _clip(detail) or "the request does not match the schema",
        title="Invalid Request",
        instance=request.url.path,
        errors=errors,
    )


def _validation_error(err: Mapping[str, Any]) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
    # ``field`` names the member in the body (``items.0.qty``) or the parameter (``offset``).
    field = ".".join(str(p) for p in loc[1:])
    return {"loc": loc, "field": field, "msg": _clip(str(err.get("msg", ""))), "type": err.get("type", "")}


def _clip(text: str, limit: int = 500) -> str:
    # A message may quote the input; a problem body should not echo a megabyte back.
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _on_authentication(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthenticationError)
    # RFC 6750 3.1: a request without credentials gets no error code, a bad token invalid_token.
    challenge = "Bearer" if exc.reason == "missing" else 'Bearer error="invalid_token"'
    return problem_response(
        401,
        str(exc),
        instance=request.url.path,
        headers={"WWW-Authenticate": challenge},
        reason=exc.reason,
    )


async def _on_permission(request: Request, exc: Exception) -> Response:
    return problem_response(403, str(exc), instance=request.url.path)


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, CircuitOpenError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    status = 502 if isinstance(exc, PeerError) and not isinstance(exc, CircuitOpenError) else 503
    extensions: dict[str, Any] = {}
    service = getattr(exc, "service", None)
    if service is not None:
        extensions["service"] = service
    return problem_response(status, str(exc), instance=request.url.path, headers=headers, **extensions)


async def _on_deadline(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeadlineExceededError)
    return problem_response(504, str(exc), instance=request.url.path, service=exc.service)


def internal_error_response(instance: str | None = None) -> Response:
    """The 500 for an unhandled exception: nothing about the internals, the request id to quote.

    Sent by the request middleware (not an exception handler) so that the request id is still
    bound when the error is logged and answered.
    """
    return problem_response(
        500, "an unexpected error occurred; quote the request id when reporting it", instance=instance
    )


class LastResortMiddleware:
    """The 500 of last resort, for an app not made by ``create_app`` (whose request middleware
    does the same): binds a request id (the caller's ``X-Request-ID`` when well-formed) and
    answers an exception that escapes the app with :func:`internal_error_response`.

    Without it Starlette answers a plain-text 500 and re-raises, and the server then closes the
    kept-alive connection: the client sees a reset instead of a problem it can quote.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
                break
        if request_id is None or not valid_request_id(request_id):
            request_id = new_request_id()
        token = request_id_var.set(request_id.decode("ascii"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            _log.error("unhandled error in %s %s", scope["method"], scope["path"], exc_info=exc)
            if started:
                raise
            await internal_error_response(scope["path"])(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def install_problem_handlers(app: FastAPI, *, last_resort: bool = False) -> None:
    """Answer every error ``app`` raises as a problem; with ``last_resort`` (an app not made by
    ``create_app``) also unexpected exceptions, as a 500 with the request id."""
    if last_resort:
        app.add_middleware(LastResortMiddleware)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(AuthenticationError, _on_authentication)
    app.add_exception_handler(PermissionDeniedError, _on_permission)
    app.add_exception_handler(DeadlineExceededError, _on_deadline)
    for unavailable in (JwksUnavailableError, DiscoveryError, PeerError):
        app.add_exception_handler(unavailable, _on_unavailable)
