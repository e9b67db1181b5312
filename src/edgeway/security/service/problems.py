"""RFC 9457 problem details for every error the service returns.

OAuth endpoints also carry RFC 6749's ``error`` and ``error_description`` members in the same
body, so OAuth client libraries and problem-aware clients both understand it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeway.security.errors import TokenError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://edgeway.dev/problems/"


class Problem(Exception):
    """Raise to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "instance": instance,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Problem:
    return Problem(
        status,
        error.replace("_", " ").capitalize(),
        description,
        kind=f"oauth/{error}",
        headers=headers,
        error=error,
        error_description=description,
    )


def unauthorized(exc: TokenError) -> Problem:
    # RFC 6750 section 3: tell the client which scheme and why.
    challenge = f'Bearer error="invalid_token", error_description="{exc.reason}"'
    return Problem(
        401,
        "Unauthorized",
        str(exc),
        kind="unauthorized",
        headers={"WWW-Authenticate": challenge},
        reason=exc.reason,
    )


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc)

    async def on_token_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TokenError)
        return problem_response(request, unauthorized(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "HTTP Error")
        problem = Problem(exc.status_code, title, str(exc.detail), headers=dict(exc.headers or {}))
        return problem_response(request, problem)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(
            request, Problem(422, "Invalid Request", detail, kind="validation", errors=errors)
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(TokenError, on_token_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
