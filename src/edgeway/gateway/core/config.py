"""Config of the gateway's core: which requests a route takes (``match``, read by the router),
how request paths are normalised (``paths``) and the access log (``access_log``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import TOKEN, StrictModel
from edgeway.gateway.config.patterns import PathPattern, PatternError, parse_path_pattern

_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:\*\.)?{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")

# What makes two routes indistinguishable to the router: (path, methods, hosts).
RouteIdentity = tuple[str, frozenset[str] | None, frozenset[str] | None]


class PathPolicy(StrictModel):
    """How request paths are normalised before routing (see docs/configuration.md)."""

    encoded_slash: Literal["reject", "decode", "keep"] = Field(
        "reject",
        description="`%2F` in a path: `reject` answers 400, `decode` treats it as `/`, "
        "`keep` leaves it as an opaque character inside a segment.",
    )
    case_sensitive: bool = Field(
        True, description="When false, paths are lower-cased before matching (and forwarded so)."
    )


class AccessLog(StrictModel):
    """One JSON line per request on stdout."""

    enabled: bool = Field(True, description="Write the access log.")


class MatchRule(StrictModel):
    """Which requests a route takes."""

    path: str = Field(
        description="Exact `/a/b`, template `/users/{id}` or prefix `/catalog/**` (matches `/catalog` too)."
    )
    methods: list[str] | None = Field(
        None,
        min_length=1,
        description="Request methods (upper-cased); `null` or absent means any but TRACE, which only "
        "a route listing it forwards (else 405).",
    )
    hosts: list[str] | None = Field(
        None,
        min_length=1,
        description="Host names, exact (`api.example.com`) or wildcard (`*.example.com`, any depth); "
        "absent means any. Compared without the port, case-insensitively.",
    )

    _pattern: PathPattern | None = PrivateAttr(None)

    @field_validator("path")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        try:
            parse_path_pattern(value)
        except PatternError as exc:
            raise PydanticCustomError("path_pattern", "{reason}", {"reason": str(exc)}) from exc
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out: list[str] = []
        for method in value:
            if TOKEN.fullmatch(method) is None:
                raise PydanticCustomError("method", "'{method}' is not an HTTP method", {"method": method})
            upper = method.upper()
            if upper in out:
                raise PydanticCustomError("method", "method {method} is listed twice", {"method": upper})
            out.append(upper)
        return out

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out: list[str] = []
        for host in value:
            lowered = host.lower().rstrip(".")
            if _IPV6_LITERAL.fullmatch(lowered) is None and _HOSTNAME.fullmatch(lowered) is None:
                hint = " (no port: hosts are compared without it)" if ":" in lowered else ""
                raise PydanticCustomError(
                    "host",
                    "'{host}' is not a host name or '*.suffix' wildcard{hint}",
                    {"host": host, "hint": hint},
                )
            if lowered in out:
                raise PydanticCustomError("host", "host '{host}' is listed twice", {"host": lowered})
            out.append(lowered)
        return out

    @model_validator(mode="after")
    def _parse(self) -> MatchRule:
        self._pattern = parse_path_pattern(self.path)
        return self

    @property
    def pattern(self) -> PathPattern:
        assert self._pattern is not None  # set by the validator of every constructed instance
        return self._pattern

    def identity(self) -> RouteIdentity:
        """What makes two routes indistinguishable to the router."""
        return (
            self.path,
            frozenset(self.methods) if self.methods is not None else None,
            frozenset(self.hosts) if self.hosts is not None else None,
        )
