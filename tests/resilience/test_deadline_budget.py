from __future__ import annotations

import pytest

from edgeway.resilience.deadline import incoming_budget, parse_grpc_timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"250m", 0.25), (b"3S", 3.0), (b"2M", 120.0), (b"1H", 3600.0), (b"500u", 0.0005), (b"7n", 7e-9)],
)
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"12", b"1x", b"-1S", b"123456789S"])
def test_malformed_grpc_timeout_is_ignored(value: bytes) -> None:
    assert parse_grpc_timeout(value) is None


def test_the_smallest_announced_budget_wins_and_junk_is_ignored() -> None:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-Edgeway-Deadline-Ms", b"1500"),
        (b"grpc-timeout", b"900m"),
        (b"x-edgeway-deadline-ms", b"soon"),
    ]
    assert incoming_budget(headers) == pytest.approx(0.9)
    assert incoming_budget([(b"x-edgeway-deadline-ms", b"0")]) == 0.0
    assert incoming_budget([(b"host", b"a")]) is None
