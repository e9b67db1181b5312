"""Canary rules at run time: which requests a rule takes, by header, cookie and query values.

Rules are tried in config order and the first whose every condition holds decides the
request's service. Header names are compared without regard to case, values exactly (after
the parser's trimming of surrounding whitespace). Cookies are read from every ``Cookie`` header
(``a=1; b=2``), a quoted value unquoted; the first occurrence of a name counts. Query values
are compared decoded (``%20`` is a space), any occurrence of the parameter may match. Cookies
and the query are parsed once per request, and only for rules that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from edgeway.gateway.traffic.config import CanaryRule
from edgeway.http.exchange import Exchange

__all__ = ["Canary", "canary_service", "request_cookies"]


class Canary:
    """One compiled canary rule."""

    __slots__ = ("cookies", "headers", "query", "service")

    def __init__(self, rule: CanaryRule) -> None:
        self.service = rule.service
        self.headers = tuple((name.lower().encode(), value.encode()) for name, value in rule.headers.items())
        self.cookies = tuple((name.encode(), value.encode()) for name, value in rule.cookies.items())
        self.query = tuple(rule.query.items())

    def __repr__(self) -> str:
        return f"<Canary -> {self.service}>"


def canary_service(rules: Sequence[Canary], ex: Exchange) -> str | None:
    """The service of the first rule the request meets, or None."""
    cookies: dict[bytes, bytes] | None = None
    query: list[tuple[str, str]] | None = None
    for rule in rules:
        if rule.headers and not _headers_match(rule.headers, ex):
            continue
        if rule.cookies:
            if cookies is None:
                cookies = request_cookies(ex)
            if any(cookies.get(name) != value for name, value in rule.cookies):
                continue
        if rule.query:
            if query is None:
                query = parse_qsl(ex.query.decode("latin-1"), keep_blank_values=True) if ex.query else []
            if not all((name, value) in query for name, value in rule.query):
                continue
        return rule.service
    return None


def _headers_match(wanted: tuple[tuple[bytes, bytes], ...], ex: Exchange) -> bool:
    for lname, value in wanted:
        for name, got in ex.headers:
            if name.lower() == lname and got.strip() == value:
                break
        else:
            return False
    return True


def request_cookies(ex: Exchange) -> dict[bytes, bytes]:
    """The request's cookies by name (the first of each name), from every Cookie header."""
    found: dict[bytes, bytes] = {}
    for name, value in ex.headers:
        if name.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, val = pair.strip().partition(b"=")
            if not eq or not key:
                continue
            val = val.strip()
            if len(val) >= 2 and val.startswith(b'"') and val.endswith(b'"'):
                val = val[1:-1]
            found.setdefault(key.strip(), val)
    return found
