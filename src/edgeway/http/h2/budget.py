"""Abuse budgets of one HTTP/2 connection: frames that cost the gateway work but serve no request.

A peer may legitimately reset a stream, ping or change settings now and then; thousands a second
is an attack (CVE-2023-44487 rapid reset, CVE-2019-9512 ping flood, CVE-2019-9515 settings
flood, CVE-2019-9518 empty frames). Each kind is counted over a fixed window; past its budget the
connection is told GOAWAY ENHANCE_YOUR_CALM and closed.
"""

from __future__ import annotations

from edgeway.http.limits import Http2Limits

RESETS = 0
PINGS = 1
SETTINGS = 2
EMPTY_FRAMES = 3
_NAMES = ("stream resets", "pings", "settings frames", "empty frames")


class FloodBudget:
    """Counts of each kind within the current window."""

    __slots__ = ("_counts", "_limits", "_window", "_window_end")

    def __init__(self, limits: Http2Limits) -> None:
        self._limits = (limits.max_resets, limits.max_pings, limits.max_settings, limits.max_empty_frames)
        self._window = limits.budget_window
        self._window_end = 0.0
        self._counts = [0, 0, 0, 0]

    def spend(self, kind: int, now: float, n: int = 1) -> str | None:
        """Count ``n`` of ``kind``; a reason naming the budget when this exceeded it, else None."""
        if now >= self._window_end:
            self._window_end = now + self._window
            self._counts = [0, 0, 0, 0]
        self._counts[kind] += n
        if self._counts[kind] > self._limits[kind]:
            return f"more than {self._limits[kind]} {_NAMES[kind]} in {self._window:g}s"
        return None
