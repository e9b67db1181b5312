"""Abuse budgets of one HTTP/2 connection: frames that cost the gateway work but serve no request.

A peer may legitimately reset a stream, ping or change settings now and then; thousands a second
is an attack (CVE-2023-44487 rapid reset, CVE-2019-9512 ping flood, CVE-2019-9515 settings
flood, CVE-2019-9518 empty frames). Each kind is counted over a fixed window; past its budget the
connection is told GOAWAY ENHANCE_YOUR_CALM and closed.

Counting an event ``h2`` produced is too late for a flood in one read: ``h2`` parses a whole
read and queues an ACK per SETTINGS and PING as it goes (a 64 KiB read holds 4,000 SETTINGS
frames). :func:`over_budget` walks the read's frame headers first, so the connection feeds
``h2`` only the frames before the one that goes over.
"""

from __future__ import annotations

from edgeway.http.limits import Http2Limits

RESETS = 0
PINGS = 1
SETTINGS = 2
EMPTY_FRAMES = 3
_NAMES = ("stream resets", "pings", "settings frames", "empty frames")
_FRAME_HEADER = 9
# Frame types and flags (RFC 9113 §6) the budgets count.
_DATA, _RST_STREAM, _SETTINGS, _PING = 0x0, 0x3, 0x4, 0x6
_ACK = _END_STREAM = 0x1
_PADDED = 0x8


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
        self._roll(now)
        self._counts[kind] += n
        if self._counts[kind] > self._limits[kind]:
            return self.reason(kind)
        return None

    def room(self, now: float) -> list[int]:
        """How many more of each kind the window still allows."""
        self._roll(now)
        return [limit - count for limit, count in zip(self._limits, self._counts, strict=True)]

    def reason(self, kind: int) -> str:
        return f"more than {self._limits[kind]} {_NAMES[kind]} in {self._window:g}s"

    def _roll(self, now: float) -> None:
        if now >= self._window_end:
            self._window_end = now + self._window
            self._counts = [0, 0, 0, 0]


def over_budget(data: bytes, pos: int, room: list[int]) -> tuple[int, int] | None:
    """Where the frames of ``data`` (whole or not, the first header at ``pos``) first exceed
    ``room``: the offset of that frame and its kind; None if they never do. ``room`` is left
    with what the frames walked did not take.

    Counts what the connection counts from ``h2``'s events: SETTINGS and PING that are not ACKs,
    RST_STREAM, DATA carrying nothing without END_STREAM. A frame whose header is cut off by the
    end of ``data`` is not counted (the next read starts with it)."""
    resets, pings, settings, empties = room
    end = len(data) - _FRAME_HEADER
    found: tuple[int, int] | None = None
    while pos <= end:
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind = data[pos + 3]
        if kind in (_SETTINGS, _PING):
            if not data[pos + 4] & _ACK:
                if kind == _SETTINGS:
                    settings -= 1
                    if settings < 0:
                        found = pos, SETTINGS
                        break
                else:
                    pings -= 1
                    if pings < 0:
                        found = pos, PINGS
                        break
        elif kind == _RST_STREAM:
            resets -= 1
            if resets < 0:
                found = pos, RESETS
                break
        elif kind == _DATA:
            flags = data[pos + 4]
            if not flags & _END_STREAM and _empty(data, pos, length, flags):
                empties -= 1
                if empties < 0:
                    found = pos, EMPTY_FRAMES
                    break
        pos += _FRAME_HEADER + length
    room[:] = [resets, pings, settings, empties]
    return found


def _empty(data: bytes, pos: int, length: int, flags: int) -> bool:
    if not length:
        return True
    if not flags & _PADDED:
        return False
    # Padding only: the pad length octet plus that many bytes (its octet may be in the next read).
    at = pos + _FRAME_HEADER
    return at < len(data) and data[at] + 1 == length
