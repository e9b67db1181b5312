"""Event ids: ULIDs (time prefix + 80 random bits), alone or in a batch for the outbox."""

from __future__ import annotations

import time
from collections import Counter

from edgeway.bus.events import new_event_id, new_event_ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _millis(event_id: str) -> int:
    value = 0
    for char in event_id[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_an_id_is_26_crockford_characters_starting_with_the_millisecond_it_was_made() -> None:
    before = int(time.time() * 1000)
    event_id = new_event_id()
    after = int(time.time() * 1000)
    assert len(event_id) == 26
    assert set(event_id) <= set(CROCKFORD)
    assert before <= _millis(event_id) <= after


def test_ids_made_later_sort_later() -> None:
    first = new_event_id()
    time.sleep(0.002)
    assert new_event_id() > first
    assert sorted([new_event_id() for _ in range(3)])[0] > first


def test_a_batch_of_ids_are_distinct_ulids_of_one_millisecond_prefix_or_later() -> None:
    before = int(time.time() * 1000)
    ids = new_event_ids(5000)
    assert len(ids) == len(set(ids)) == 5000
    assert all(len(i) == 26 and set(i) <= set(CROCKFORD) for i in ids)
    assert all(_millis(i) >= before for i in ids)
    assert new_event_ids(0) == []


def test_the_random_part_uses_the_whole_alphabet_evenly() -> None:
    # 16 characters x 5000 ids = 80,000 draws: each of 32 characters ~2,500 times. A mapping bug
    # (a character never drawn, or drawn twice as often) shows far outside these bounds.
    counts = Counter("".join(i[10:] for i in new_event_ids(5000)))
    assert set(counts) == set(CROCKFORD)
    assert 2000 < min(counts.values()) <= max(counts.values()) < 3000
