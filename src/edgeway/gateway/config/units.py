"""Durations and byte sizes as written in config files.

A duration is a number of seconds or a string with a unit (``250ms``, ``2s``, ``1.5m``, ``1h``,
``365d``);
it is stored as float seconds. A size is an integer number of bytes or a string with a binary or
decimal unit (``16KiB``, ``10MiB``, ``1GB``); it is stored as int bytes. Both refuse negatives,
booleans (YAML's ``yes`` would otherwise become 1) and unknown units, naming the accepted ones.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_WITH_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_duration(value: Any) -> float:
    """Seconds from ``2``, ``0.5``, ``"250ms"``, ``"2s"``, ``"1m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration like 2s or 250ms, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        found = _NUMBER_WITH_UNIT.fullmatch(value)
        unit = found.group(2).lower() if found else ""
        if found is None or unit not in _DURATION_UNITS:
            raise PydanticCustomError(
                "duration",
                "invalid duration '{value}': use a number of seconds or a number with a unit "
                "(ms, s, m, h, d), e.g. 250ms or 2s",
                {"value": value},
            )
        seconds = float(found.group(1)) * _DURATION_UNITS[unit]
    else:
        raise PydanticCustomError(
            "duration", "expected a duration like 2s or 250ms, got {kind}", {"kind": type(value).__name__}
        )
    if seconds < 0 or not math.isfinite(seconds):
        raise PydanticCustomError("duration", "a duration must be a finite number >= 0")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from ``16384``, ``"16KiB"``, ``"10MiB"``, ``"1GB"``."""
    if isinstance(value, bool):
        raise PydanticCustomError("size", "expected a size like 16KiB or 10MiB, got a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str):
        found = _NUMBER_WITH_UNIT.fullmatch(value)
        unit = found.group(2).lower() if found else ""
        if found is None or unit not in _SIZE_UNITS:
            raise PydanticCustomError(
                "size",
                "invalid size '{value}': use a number of bytes or a number with a unit "
                "(B, KB, MB, GB, KiB, MiB, GiB), e.g. 16KiB",
                {"value": value},
            )
        scaled = float(found.group(1)) * _SIZE_UNITS[unit]
        if not scaled.is_integer():
            raise PydanticCustomError(
                "size", "size '{value}' is not a whole number of bytes", {"value": value}
            )
        size = int(scaled)
    else:
        raise PydanticCustomError(
            "size", "expected a size like 16KiB or 10MiB, got {kind}", {"kind": type(value).__name__}
        )
    if size < 0:
        raise PydanticCustomError("size", "a size must be >= 0")
    return size


# The JSON Schema carries an ``x-edgeway-unit`` marker so the reference generator can name the
# type; editors ignore unknown keys.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)\s*$"},
            ],
            "x-edgeway-unit": "duration",
        }
    ),
]
"""Seconds as float; config accepts a number of seconds or ``250ms`` / ``2s`` / ``1m`` / ``1h`` / ``1d``."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*([kKmMgG]i?[bB]|[bB])?\s*$"},
            ],
            "x-edgeway-unit": "size",
        }
    ),
]
"""Bytes as int; config accepts an integer or ``16KiB`` / ``10MiB`` / ``1GB``."""
