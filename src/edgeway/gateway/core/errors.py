"""Errors of the gateway core.

    GatewayError            base of everything raised by edgeway.gateway
    ├── ConfigError         a config file (or mapping) is invalid; holds every ConfigIssue found,
    │                       one per line of its str(): ``file:line:col: key.path: message``
    ├── PathError           a request path cannot be normalised safely; answer 400
    └── Rejection           a route's filter or action refuses the request (401, 403, 429, 503...);
                            answered as a problem+json with the headers it carries

A ConfigIssue is a value, not an exception: the loader collects all of them before raising, so a
user fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class GatewayError(Exception):
    """Base of the gateway core's errors."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config source, located as precisely as the source allows.

    ``line`` and ``column`` are 1-based; they are None when the problem has no place in a file
    (a mapping validated from code, or a key that is missing altogether and has no parent).
    """

    file: str
    line: int | None
    column: int | None
    key_path: str
    message: str

    def __str__(self) -> str:
        place = self.file
        if self.line is not None:
            place += f":{self.line}"
            if self.column is not None:
                place += f":{self.column}"
        if self.key_path:
            return f"{place}: {self.key_path}: {self.message}"
        return f"{place}: {self.message}"


class ConfigError(GatewayError):
    """The config is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues) or "invalid config")


class PathError(GatewayError):
    """A request path is malformed or unsafe (dot segments above the root, NUL, a rejected %2F).

    The engine answers 400 and does not route the request.
    """

    status = 400

    def __init__(self, reason: str, path: bytes | str) -> None:
        shown = path if isinstance(path, str) else path.decode("latin-1")
        super().__init__(f"{reason}: {shown[:200]!r}")
        self.reason = reason
        self.path = shown


class Rejection(GatewayError):
    """A filter or action refuses the request; the runtime answers an RFC 9457 problem.

    ``headers`` go on the response (``WWW-Authenticate``, ``Retry-After``...); ``extra`` are
    additional problem members (e.g. ``errors`` of a body validation), JSON-ready. ``members``
    carries members whose names the gateway does not choose (a service's error body): they are
    data, never keyword arguments, so no name can collide with a parameter; ``extra`` wins a name
    both hold.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        members: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = list(headers)
        self.extra: dict[str, Any] = {**members, **extra} if members else extra
