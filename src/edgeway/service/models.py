"""Bounded types for request models and parameters, and the base of partial-update models.

A plain ``int`` in a request model or query parameter accepts any size: ``10**30`` passes
validation and then fails in the database driver (or a sum overflows later), which answers 500
after the request was accepted. Every integer a service takes from a client is one of these
types instead, so an out-of-range value is a 422 problem before any work is done:

============  =======================  ====================================================
type          range                    for
============  =======================  ====================================================
``Int32``     -2³¹ … 2³¹-1             a value stored in an ``INTEGER`` column
``Int64``     -2⁶³ … 2⁶³-1             a value stored in a ``BIGINT`` column
``Count``     0 … 2³¹-1                stock levels, counts, anything stored as ``INTEGER``
``Cursor``    0 … 2⁶³-1                offsets, ``since`` cursors, row ids
``Money``     0 … ``MAX_MONEY``        an amount in minor units (cents), stored as ``BIGINT``
============  =======================  ====================================================

``MAX_MONEY`` (10¹³ minor units) leaves room to add a hundred thousand maximal amounts without
leaving 64 bits; a total is checked again with :func:`money_total`, so a sum that is larger than
any single amount may be is refused as clearly as a single amount would be.

Strings that end up in a URL, a header or an e-mail header are constrained too: ``ResourceId``
(letters, digits and ``._~:@+-``, as used in paths and ``Location``; ``ResourceIdPath`` as a
path parameter) and ``SingleLine`` (no
control characters, so no CR/LF that would split a header).

:class:`Patch` is the base of PATCH bodies: a field left out is not changed, and a field sent as
``null`` is refused (422) unless the model lists it in ``nullable`` — ``{"roles": null}`` must not
store a null where the rest of the code expects a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from edgeway.service.problems import Problem

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_MONEY",
    "Count",
    "Cursor",
    "Int32",
    "Int64",
    "Money",
    "Patch",
    "ResourceId",
    "ResourceIdPath",
    "SingleLine",
    "is_single_line",
    "location",
    "money_total",
]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_MONEY = 10**13

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Cursor = Annotated[int, Field(ge=0, le=INT64_MAX)]
Money = Annotated[int, Field(ge=0, le=MAX_MONEY, description="an amount in minor units (cents)")]

RESOURCE_ID_PATTERN = r"^[A-Za-z0-9._~:@+-]{1,64}$"
ResourceId = Annotated[str, StringConstraints(pattern=RESOURCE_ID_PATTERN)]
ResourceIdPath = Annotated[str, Path(pattern=RESOURCE_ID_PATTERN)]
# C0 controls, DEL, NEL and the Unicode line/paragraph separators: each of them ends a line for
# some parser (an e-mail header folds or breaks on them).
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f\x85\u2028\u2029]*$"
SingleLine = Annotated[str, StringConstraints(pattern=SINGLE_LINE_PATTERN)]
_SINGLE_LINE = re.compile(SINGLE_LINE_PATTERN)

MONEY_TOO_LARGE = "https://edgeway.dev/problems/amount-too-large"


def is_single_line(text: str) -> bool:
    """True when ``text`` is a :data:`SingleLine`: safe in a header, for input read outside a model."""
    return _SINGLE_LINE.match(text) is not None


def location(*segments: str) -> str:
    """A path for a ``Location`` header from ``segments``, each percent-encoded.

    A header value must be ASCII without CR/LF; a client's id copied in verbatim answers 500 (or
    splits the response) after the work was done. Build every header value from input this way.
    """
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def money_total(amounts: Iterable[int]) -> int:
    """The sum of ``amounts``, or a 422 problem when it exceeds :data:`MAX_MONEY`."""
    total = 0
    for amount in amounts:
        total += amount
    if total > MAX_MONEY:
        raise Problem(
            422,
            f"the total {total} is larger than the largest amount accepted ({MAX_MONEY})",
            title="Amount Too Large",
            type=MONEY_TOO_LARGE,
            limit=MAX_MONEY,
        )
    return total


def _drop_null_branch(schema: dict[str, Any], cls: type[Any]) -> None:
    """The JSON schema of a :class:`Patch`: ``X | None`` fields show as ``X`` (null is refused)."""
    nullable: frozenset[str] = getattr(cls, "nullable", frozenset())
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf")
        if name in nullable or not isinstance(branches, list):
            continue
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            del prop["anyOf"]
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
        if prop.get("default", ...) is None:
            del prop["default"]


class Patch(BaseModel):
    """A partial update: declare fields ``X | None = None``; omitted is unchanged, null is refused.

    Read what was sent with ``model_dump(exclude_unset=True)``. List a field in ``nullable`` when
    null is a value it may really take (clearing an optional field).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_branch)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None and k not in cls.nullable)
            if nulls:
                # A ValueError here becomes the usual 422 with the offending fields named.
                raise ValueError(f"null is not a value for {', '.join(nulls)}; leave a field out to keep it")
        return data
