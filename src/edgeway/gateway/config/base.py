"""The base every gateway config model builds on, shared by the config modules each filter and
action keeps next to its code (``filters/auth/config.py``, ``actions/push/config.py``...), so
they need not import the assembly (:mod:`.schema`, which imports them)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from edgeway.bus.errors import BusConfigError
from edgeway.bus.urls import broker_urls, nats_servers
from edgeway.gateway.config.keypath import Loc, format_loc

# RFC 9110 token: header names and methods.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class LocatedProblemsError(ValueError):
    """Several located problems found by one model validator.

    pydantic keeps the raised exception in the error's ``ctx["error"]``; the loader unpacks it
    into one ConfigIssue per problem, each ``loc`` relative to the model that raised.
    """

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{format_loc(loc)}: {message}" for loc, message in self.problems))


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default), and types are
    strict: YAML already types scalars, so ``max_headers: yes`` is a mistake, not 1."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


def _header_name(name: str) -> str:
    if TOKEN.fullmatch(name) is None:
        raise PydanticCustomError("header_name", "'{name}' is not a valid header name", {"name": name})
    return name


def _header_value(value: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise PydanticCustomError("header_value", "a header value may not contain CR, LF or NUL")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


def broker_setting(value: str, *, nats_only: bool = False) -> str:
    """Check a broker URL setting the way its client will read it (:mod:`edgeway.bus.urls`):
    one URL, or a NATS cluster comma-separated; the value is kept as written."""
    try:
        nats_servers(value) if nats_only else broker_urls(value)
    except BusConfigError as exc:
        raise PydanticCustomError("url", "{message}", {"message": str(exc)}) from exc
    return value
