"""RFC 9457 problem details for every error the service returns, through the service kit's handlers.

The security service is not built with ``create_app`` (it has no registry, flags or remote
config), but its errors are answered by the same handlers as every other service's
(:func:`edgeway.service.problems.install_problem_handlers`): 404, 405, validation errors, and an
unexpected exception as a 500 with the request id, never plain text. Its own problem types live
under :data:`TYPE_BASE`.

OAuth endpoints also carry RFC 6749's ``error`` and ``error_description`` members in the same
body, so OAuth client libraries and problem-aware clients both understand it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from edgeway.security.errors import TokenError
from edgeway.service import problems as kit

PROBLEM_JSON = kit.PROBLEM_JSON
TYPE_BASE = "https://edgeway.dev/problems/"


class Problem(kit.Problem):
    """Raise to answer with a problem+json body of type ``TYPE_BASE + kind``."""

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
        self.kind = kind or title.lower().replace(" ", "-")
        super().__init__(
            status, detail or None, title=title, type=TYPE_BASE + self.kind, headers=headers, **extra
        )


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


def install_problem_handlers(app: FastAPI) -> None:
    kit.install_problem_handlers(app, last_resort=True)

    async def on_token_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TokenError)
        problem = unauthorized(exc)
        return kit.problem_response(
            problem.status,
            problem.detail,
            title=problem.title,
            type=problem.type,
            instance=request.url.path,
            headers=problem.headers,
            **problem.extensions,
        )

    app.add_exception_handler(TokenError, on_token_error)
