"""Timeouts as budgets: how long a request may still take, read from the caller and passed on.

A service behind the gateway should not keep working on a request the gateway has already
given up on. So every proxied request carries the time it has left, in milliseconds, in
``X-Edgeway-Deadline-Ms``: the service's ``timeouts.total``, or less when the caller sent a
shorter budget of its own (``X-Edgeway-Deadline-Ms`` or gRPC's ``grpc-timeout``). A retry sends
what is left after the failed attempt. A service (and the service kit's clients) can stop early,
or pass the remainder on to the next hop, instead of finishing work nobody waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["DEADLINE_HEADER", "incoming_budget", "parse_grpc_timeout"]

DEADLINE_HEADER: Final = b"x-edgeway-deadline-ms"
_GRPC_TIMEOUT: Final = b"grpc-timeout"
# grpc-timeout: up to 8 digits and a unit (gRPC over HTTP/2 protocol spec).
_GRPC_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_LENGTHS: Final = frozenset({len(DEADLINE_HEADER), len(_GRPC_TIMEOUT)})


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds from a ``grpc-timeout`` value like ``250m`` or ``3S``; None when malformed."""
    value = value.strip()
    unit = _GRPC_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _parse_ms(value: bytes) -> float | None:
    value = value.strip()
    if not value.isdigit() or len(value) > 12:
        return None
    return int(value) / 1000


def incoming_budget(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """The smallest budget (seconds) the caller announced, or None when it sent none (or junk)."""
    found: float | None = None
    for name, value in headers:
        if len(name) not in _LENGTHS:  # cheap filter: almost every header stops here
            continue
        lname = name.lower()
        if lname == DEADLINE_HEADER:
            budget = _parse_ms(value)
        elif lname == _GRPC_TIMEOUT:
            budget = parse_grpc_timeout(value)
        else:
            continue
        if budget is not None and (found is None or budget < found):
            found = budget
    return found
