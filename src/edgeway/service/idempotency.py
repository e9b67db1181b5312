"""``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header): one rule for every service.

A client that repeats a request with the same key gets the first answer, and nothing is done
twice. A key sent again with a *different* request is the client's mistake, answered ``422``
with the problem type :data:`KEY_REUSED` (the draft's choice) — never silently the first
answer, which would tell the client that its second request succeeded. A request with the key
still being processed (a race) is ``409``.

Each service decides what "the same request" means for its resource (the fields that make the
first answer valid for the second request) and calls :func:`check_replay` with both.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header

from edgeway.service.problems import Problem

__all__ = ["KEY_REUSED", "REPLAYED", "IdempotencyKey", "check_replay"]

KEY_REUSED = "https://edgeway.dev/problems/idempotency-key-reused"
# ``responses=`` for a route that creates (201/202) and answers a repeat with 200.
REPLAYED: dict[int | str, dict[str, Any]] = {200: {"description": "A repeat: the first answer again"}}
# The draft makes the key a structured-field string: printable ASCII; bounded for the database.
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"

IdempotencyKey = Annotated[
    str | None,
    Header(
        pattern=KEY_PATTERN,
        description="Repeat the request with the same key to get the first answer; nothing is done twice.",
    ),
]
"""Declare ``idempotency_key: IdempotencyKey = None`` to read the ``Idempotency-Key`` header."""


def check_replay(key: str, first: object, again: object, *, detail: str = "") -> None:
    """Raise the 422 problem when ``again`` (this request) differs from ``first`` (the request
    the key was first used with); return when it is the same request, to be answered as before."""
    if first != again:
        raise Problem(
            422,
            f"Idempotency-Key {key!r} was used for another request" + (f" ({detail})" if detail else ""),
            title="Idempotency Key Reused",
            type=KEY_REUSED,
        )
