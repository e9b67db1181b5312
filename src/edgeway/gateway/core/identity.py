"""The verified caller of a request, as the auth filter established it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller of a request, as the auth filter established it."""

    subject: str
    client_id: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]  # every verified claim, for conditions and Python endpoints
    token: str  # the bearer token, passed on to services that verify it again
