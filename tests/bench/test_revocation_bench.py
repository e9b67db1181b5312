"""The revocation benchmark runs end to end at a tiny size."""

from __future__ import annotations

from bench import revocation


def test_revocation_bench_measures_both_legs_at_both_gateways() -> None:
    result = revocation.run(json=False, tokens=2, poll_interval=0.5)
    for leg in ("push", "poll"):
        assert result[leg]["samples"] == 4  # two tokens, two gateways
        assert 0 < result[leg]["median_ms"] <= result[leg]["max_ms"]
    assert result["push"]["poll_interval_s"] == 3600.0
    assert result["machine"]["cores"]
