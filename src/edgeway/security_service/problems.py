"""The security service's problems: the service kit's :class:`~edgeway.service.Problem`, typed
under :data:`TYPE_BASE`.

The service is built with the kit's ``create_app``, so every error it returns is answered by the
kit's handlers (404, 405, validation errors, an unexpected exception as a 500 with the request
id); :func:`problem` builds the kit's ``Problem`` with this service's type URIs, and a
:class:`~edgeway.security.errors.TokenError` that escapes an endpoint is answered as
:func:`unauthorized`.

OAuth endpoints also carry RFC 6749's ``error`` and ``error_description`` members in the same
body, so OAuth client libraries and problem-aware clients both understand it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from edgeway.security.errors import TokenError
from edgeway.service.problems import Problem, answer_problem

__all__ = ["TYPE_BASE", "install_token_error_handler", "oauth_error", "problem", "unauthorized"]

TYPE_BASE = "https://edgeway.dev/problems/"


def problem(
    status: int,
    title: str,
    detail: str = "",
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Problem:
    """The problem of type ``TYPE_BASE + kind`` (``kind`` defaults to the title in kebab case)."""
    kind = kind or title.lower().replace(" ", "-")
    return Problem(status, detail or None, title=title, type=TYPE_BASE + kind, headers=headers, **extra)


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Problem:
    return problem(
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
    return problem(
        401,
        "Unauthorized",
        str(exc),
        kind="unauthorized",
        headers={"WWW-Authenticate": challenge},
        reason=exc.reason,
    )


def install_token_error_handler(app: FastAPI) -> None:
    """Answer a :class:`TokenError` an endpoint lets escape as :func:`unauthorized`."""

    async def on_token_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TokenError)  # registered for TokenError only
        return answer_problem(request, unauthorized(exc))

    app.add_exception_handler(TokenError, on_token_error)
