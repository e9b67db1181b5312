"""RFC 3339 UTC timestamps with milliseconds, fast enough for one per request."""

from __future__ import annotations

import time


class Rfc3339Stamper:
    """strftime per line costs ~1.5 µs; caching the per-second prefix makes a stamp ~0.3 µs."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"
