"""Config of traffic shifting on a proxy route (``proxy.split``, ``proxy.canary``, ``proxy.sticky``,
``proxy.mirror``): weighted splits between services, canary matches, sticky choices by a
request key, and shadow copies of requests. The models are fields of the proxy action's config
(:mod:`edgeway.gateway.actions.proxy_config`); what runs them is :mod:`edgeway.gateway.traffic`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from edgeway.gateway.config.base import HeaderName, HeaderValue, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import ByteSize, Duration

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import Route
    from edgeway.gateway.filters.auth.config import GatewayAuth

__all__ = ["CanaryRule", "MirrorRule", "SplitSide", "StickyRule", "check_split", "traffic_problems"]

# RFC 6265 cookie-name: a token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Percentages are compared with this slack: 33.33 + 33.33 + 33.34 is 100.
_SUM_TOLERANCE = 1e-6


class SplitSide(StrictModel):
    """One side of a weighted split: a service and its share of the route's requests."""

    service: str = Field(description="Name of a service under `services`.")
    weight: float = Field(
        ge=0,
        le=100,
        description="Percentage of the route's requests (those no canary rule took) sent to this "
        "service; the sides' weights sum to 100. 0 keeps a side configured without traffic.",
    )


def check_split(sides: Sequence[SplitSide]) -> list[tuple[Loc, str]]:
    """Problems of a split, relative to the split list: two sides or more, each service once,
    weights summing to 100. Also what a run-time weight change is held to."""
    problems: list[tuple[Loc, str]] = []
    if len(sides) < 2:
        problems.append(((), "a split needs two sides or more; with one, set `service` instead"))
    seen: dict[str, int] = {}
    for index, side in enumerate(sides):
        if side.service in seen:
            problems.append(
                (
                    (index, "service"),
                    f"service '{side.service}' is already split[{seen[side.service]}]; list each once",
                )
            )
        seen.setdefault(side.service, index)
    total = sum(side.weight for side in sides)
    if sides and not math.isclose(total, 100.0, abs_tol=_SUM_TOLERANCE):
        shares = " + ".join(f"{side.weight:g}" for side in sides)
        problems.append(((), f"the weights must sum to 100 (percent); they sum to {shares} = {total:g}"))
    return problems


def _check_names(
    values: dict[str, str], where: str, what: str, pattern: re.Pattern[str] | None
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for name, value in values.items():
        if not name or (pattern is not None and pattern.fullmatch(name) is None):
            problems.append(((where, name), f"'{name}' is not a valid {what}"))
        if any(ch in value for ch in "\r\n\x00"):
            problems.append(((where, name), "a value may not contain CR, LF or NUL"))
    return problems


class CanaryRule(StrictModel):
    """Requests that match go to `service`, before any split: every condition given must hold
    (values compared exactly, header names without regard to case)."""

    service: str = Field(description="Name of a service under `services` that takes matching requests.")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Request headers and the value each must have, e.g. `X-Beta: '1'`."
    )
    cookies: dict[str, str] = Field(
        default_factory=dict, description="Cookies and the value each must have, e.g. `beta: '1'`."
    )
    query: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters and the value one of their occurrences must have (decoded), "
        "e.g. `variant: v2`.",
    )

    @model_validator(mode="after")
    def _conditions(self) -> CanaryRule:
        problems = _check_names(self.cookies, "cookies", "cookie name", _COOKIE_NAME)
        problems += _check_names(self.query, "query", "query parameter name", None)
        if not (self.headers or self.cookies or self.query):
            problems.append(((), "a canary rule needs a condition: `headers`, `cookies` or `query`"))
        if problems:
            raise LocatedProblemsError(problems)
        return self


class StickyRule(StrictModel):
    """Where a request's key comes from (exactly one). Requests with the same key go to the same
    side of the split and the same instance of its service (consistent hashing); a request
    without the key is balanced as if the route were not sticky."""

    header: HeaderName | None = Field(None, description="A request header, e.g. `X-User-ID`.")
    cookie: str | None = Field(None, description="A cookie, e.g. `session`.")
    subject: bool = Field(
        False, description="The authenticated subject (the token's `sub`); needs `auth` on the route."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyRule:
        given = [
            name
            for name, value in (("header", self.header), ("cookie", self.cookie), ("subject", self.subject))
            if value
        ]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise LocatedProblemsError(
                [((), f"sticky needs exactly one of: header, cookie, subject: true (found: {found})")]
            )
        if self.cookie is not None and _COOKIE_NAME.fullmatch(self.cookie) is None:
            raise LocatedProblemsError([(("cookie",), f"'{self.cookie}' is not a valid cookie name")])
        return self

    @property
    def source(self) -> str:
        """``header:<name>``, ``cookie:<name>`` or ``subject``: what the key is, for reports."""
        if self.header is not None:
            return f"header:{self.header}"
        if self.cookie is not None:
            return f"cookie:{self.cookie}"
        return "subject"


class MirrorRule(StrictModel):
    """Shadow traffic: a copy of a sampled share of the route's requests goes to another service.
    Its answer is discarded (its status and latency are counted); it never delays or fails the
    real request: it is sent after the real one, from its own task, with its own timeout, and
    dropped when `max_in_flight` copies are still waiting for answers."""

    service: str = Field(description="Name of a service under `services` that receives the copies.")
    fraction: float = Field(
        1.0, ge=0, le=1, description="Share of the route's requests copied, 0 to 1 (drawn at random)."
    )
    max_body: ByteSize = Field(
        64 * 1024,
        description="A request with a larger body (or one still arriving past the gateway's "
        "`limits.request_buffer_bytes`) is not copied.",
    )
    timeout: Duration = Field(
        2.0, gt=0, description="A copy's whole exchange; one still unanswered then is abandoned."
    )
    max_in_flight: int = Field(
        64, ge=1, description="Copies waiting for an answer at once; a request beyond it is not copied."
    )


def traffic_problems(auth: GatewayAuth | None, routes: Sequence[Route]) -> list[tuple[Loc, str]]:
    """Problems only visible with the whole config, each with its key path from the top."""
    problems: list[tuple[Loc, str]] = []
    for index, route in enumerate(routes):
        proxy = route.proxy
        if proxy is None or proxy.sticky is None or not proxy.sticky.subject:
            continue
        mode = (
            route.auth.mode if route.auth is not None else auth.default_mode if auth is not None else "none"
        )
        if mode == "none":  # (a route's auth without the top-level one is reported by auth's checks)
            problems.append(
                (
                    ("routes", index, "proxy", "sticky", "subject"),
                    "sticky on the subject needs `auth` (required or optional) on this route",
                )
            )
    return problems
