"""Reading into JSON values by dotted path, and turning values into text for paths, queries and
headers."""

from __future__ import annotations

from typing import Any, Final

import orjson

from edgeway.gateway.actions.aggregate.templates import Star, Steps


class _Missing:
    """No value at that path (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def lookup(value: Any, steps: Steps) -> Any:
    """The value at ``steps``, MISSING when absent; ``[*]`` collects every match into a list
    (nested ``[*]`` flatten, and elements without the rest of the path are skipped)."""
    for index, step in enumerate(steps):
        if type(step) is str:
            if type(value) is not dict:
                return MISSING
            value = value.get(step, MISSING)
            if value is MISSING:
                return MISSING
        elif type(step) is int:
            if type(value) is not list or step >= len(value):
                return MISSING
            value = value[step]
        else:
            if type(value) is not list:
                return MISSING
            rest = steps[index + 1 :]
            if not rest:
                return value
            nested = any(isinstance(s, Star) for s in rest)
            out: list[Any] = []
            for element in value:
                found = lookup(element, rest)
                if found is MISSING:
                    continue
                if nested and type(found) is list:
                    out.extend(found)
                else:
                    out.append(found)
            return out
    return value


def as_text(value: Any, separator: str = ",") -> str:
    """A value as it goes into a path segment, a query parameter or a header: strings as they
    are, JSON literals for numbers, booleans and null, lists joined, objects as JSON."""
    if type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is list:
        return separator.join(as_text(v, separator) for v in value)
    if type(value) is int or type(value) is float:
        return orjson.dumps(value).decode()
    return orjson.dumps(value).decode()
