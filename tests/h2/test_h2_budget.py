"""The frame walk that stops a read at the first frame past a flood budget, on frames as sent."""

from __future__ import annotations

from hyperframe.frame import DataFrame, PingFrame, RstStreamFrame, SettingsFrame

from edgeway.http.h2.budget import EMPTY_FRAMES, PINGS, RESETS, SETTINGS, over_budget

SETTINGS_FRAME = SettingsFrame(0, settings={4: 100}).serialize()
ROOMY = [100, 100, 100, 100]


def test_the_frame_past_the_budget_is_where_the_read_stops() -> None:
    data = SETTINGS_FRAME * 10
    assert over_budget(data, 0, [100, 100, 3, 100]) == (3 * len(SETTINGS_FRAME), SETTINGS)
    assert over_budget(data, 0, ROOMY) is None


def test_acks_are_not_counted() -> None:
    acks = SettingsFrame(0, flags=["ACK"]).serialize() + PingFrame(0, flags=["ACK"]).serialize()
    assert over_budget(acks * 10, 0, [0, 0, 0, 0]) is None


def test_each_kind_is_counted() -> None:
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    reset = RstStreamFrame(1, error_code=8).serialize()
    empty = DataFrame(1).serialize()
    padded_empty = DataFrame(1, pad_length=5, flags=["PADDED"]).serialize()
    ended = DataFrame(1, flags=["END_STREAM"]).serialize()
    assert over_budget(ping * 2, 0, [9, 1, 9, 9]) == (len(ping), PINGS)
    assert over_budget(reset * 2, 0, [1, 9, 9, 9]) == (len(reset), RESETS)
    assert over_budget(empty + padded_empty, 0, [9, 9, 9, 1]) == (len(empty), EMPTY_FRAMES)
    assert over_budget(ended * 5, 0, [9, 9, 9, 0]) is None  # END_STREAM: not an empty frame


def test_the_walk_starts_where_told_and_ignores_a_cut_off_header() -> None:
    data = b"junk" + SETTINGS_FRAME * 3 + SETTINGS_FRAME[:5]
    assert over_budget(data, 4, [9, 9, 3, 9]) is None
    assert over_budget(data, 4, [9, 9, 2, 9]) == (4 + 2 * len(SETTINGS_FRAME), SETTINGS)
