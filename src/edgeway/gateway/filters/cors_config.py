"""Config of the CORS filter: ``cors`` on a route, and gateway-wide."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import TOKEN, HeaderName, LocatedProblemsError, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.units import Duration


class CorsRule(StrictModel):
    """Cross-origin resource sharing for browser clients."""

    enabled: bool = Field(True, description="`false` turns the gateway's CORS off for one route.")
    allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed: exact (`https://app.example.com`), a wildcard pattern "
        "(`https://*.example.com`, one or more labels) or `*` (any origin, not with credentials).",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST"], description="Methods allowed cross-origin; `*`: any."
    )
    allow_headers: list[str] = Field(
        default_factory=list,
        description="Request headers allowed besides the CORS-safelisted ones; `*`: any the browser "
        "asks for.",
    )
    expose_headers: list[HeaderName] = Field(
        default_factory=list, description="Response headers scripts may read besides the safelisted ones."
    )
    allow_credentials: bool = Field(False, description="Allow cookies and HTTP authentication.")
    max_age: Duration | None = Field(600.0, description="How long a browser may cache a preflight answer.")

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            if not re.fullmatch(r"[a-z][a-z0-9+.-]*://(\*\.)?[A-Za-z0-9.\-\[\]:]+", origin):
                raise PydanticCustomError(
                    "origin",
                    "'{origin}' is not an origin: use scheme://host[:port] without a path, "
                    "'scheme://*.domain' or '*'",
                    {"origin": origin},
                )
        return value

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if method != "*" and TOKEN.fullmatch(method) is None:
                raise PydanticCustomError("method", "'{method}' is not an HTTP method", {"method": method})
        return [m.upper() for m in value]

    @field_validator("allow_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and TOKEN.fullmatch(name) is None:
                raise PydanticCustomError(
                    "header_name", "'{name}' is not a valid header name", {"name": name}
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CorsRule:
        problems: list[tuple[Loc, str]] = []
        if self.enabled and not self.allow_origins:
            problems.append((("allow_origins",), "list at least one origin (or set enabled: false)"))
        if self.allow_credentials and "*" in self.allow_origins:
            problems.append(
                (
                    ("allow_origins",),
                    "'*' cannot be combined with allow_credentials: browsers refuse it; list the origins",
                )
            )
        if problems:
            raise LocatedProblemsError(problems)
        return self
