"""``grpc-timeout``: the deadline a gRPC client gives its call, and the budget sent on.

The header is 1 to 8 digits and a unit: ``H`` hours, ``M`` minutes, ``S`` seconds, ``m``
milliseconds, ``u`` microseconds, ``n`` nanoseconds (gRPC over HTTP/2, "Requests"). The gateway
takes it as the call's deadline when it is shorter than the service's total timeout, and sends
the instance what is left of it when the call goes out, so the service stops working on a call
the client has given up on.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GrpcTimeoutError", "format_timeout", "parse_timeout"]

GRPC_TIMEOUT: Final = b"grpc-timeout"

_UNITS: Final = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
_MAX_VALUE: Final = 99_999_999  # 8 digits


class GrpcTimeoutError(ValueError):
    """A ``grpc-timeout`` that is not 1 to 8 digits and a unit (H, M, S, m, u, n)."""


def parse_timeout(value: bytes) -> float:
    """Seconds from a ``grpc-timeout`` value, e.g. ``b"250m"`` -> 0.25."""
    value = value.strip()
    digits = value[:-1]
    unit = _UNITS.get(value[-1]) if value else None
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        shown = value[:20].decode("latin-1")
        raise GrpcTimeoutError(
            f"grpc-timeout {shown!r} is not 1 to 8 digits and a unit (H, M, S, m, u or n), e.g. 250m"
        )
    return int(digits) * unit


def format_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value for ``seconds`` (at least 1 µs): in the finest unit whose value
    fits in 8 digits, rounded down, so the service never believes it has more time than the
    caller gave."""
    micros = int(seconds * 1_000_000)
    if micros <= 0:
        return b"1u"
    if micros <= _MAX_VALUE:
        return b"%du" % micros
    millis = micros // 1000
    if millis <= _MAX_VALUE:
        return b"%dm" % millis
    secs = millis // 1000
    if secs <= _MAX_VALUE:
        return b"%dS" % secs
    return b"%dM" % min(secs // 60, _MAX_VALUE)
