"""Reading JSON edgeway did not write — services' answers, clients' bodies — with one limit on
how deeply it may nest, at the gateway and in the service kit.

The parsers accept more than the encoders write: orjson reads 1,024 levels and writes 254,
Python's json reads about 1,000 levels and pydantic writes fewer than 300. A deep document that
parsed would fail later, when an answer built from it is encoded, with a 500 (at a service, after
the work was done). :data:`MAX_DEPTH` is checked as the document is read, so a document too deep
is a bad input like any other (at the gateway an optional call is reported, a required one is a
502, a client's body a 400; at a kit service the body is a 400), with room left under the
encoders' limits for the levels added around it (a group, a fan-out list, a body template, a
response model).
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 128


class TooDeep(orjson.JSONDecodeError):
    """The document nests deeper than :data:`MAX_DEPTH`; an ``orjson.JSONDecodeError``, so every
    reader that handles a document that is not JSON handles this one the same way."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels", "", 0)

    def __str__(self) -> str:
        return self.msg


def loads(data: bytes | str) -> Any:
    """``orjson.loads``, refusing a document nested deeper than :data:`MAX_DEPTH` (TooDeep)."""
    value = orjson.loads(data)
    # Depth is at most the number of brackets: counting them (C speed, no allocation) clears
    # nearly every document without walking it.
    if (type(value) is dict or type(value) is list) and _brackets(data) > MAX_DEPTH and _too_deep(value):
        raise TooDeep
    return value


def nests_too_deep(data: bytes) -> bool:
    """True when ``data`` is JSON nested deeper than :data:`MAX_DEPTH`. A document that is not
    JSON (or too deep for orjson to read at all) is False: the reader's own parser refuses it."""
    if _brackets(data) <= MAX_DEPTH:
        return False
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return (type(value) is dict or type(value) is list) and _too_deep(value)


def _brackets(data: bytes | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False
