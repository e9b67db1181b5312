"""Fault tests with real processes: the gateway (``edgeway gateway``) and its instances are child
processes, the load is steady keep-alive traffic; the scenarios are :mod:`bench.faults`'s, on
shorter timelines (``./dev bench faults`` runs them longer and reports the figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults

# Never two scenarios at once, and paced load (RATE requests/s) rather than as fast as the
# gateway answers, so the rest of the suite keeps running beside them on 2 cores.
pytestmark = pytest.mark.xdist_group("gateway-faults")
RATE = 1500.0


async def test_killing_one_of_two_instances_loses_almost_nothing_and_it_rejoins(tmp_path: Path) -> None:
    result = await faults.kill_scenario(tmp_path, connections=8, before=1.0, down=2.5, after=2.0, rate=RATE)
    assert result["requests"] > 1000
    assert result["errors_before_kill"] == 0
    assert result["kill_error_rate"] <= 0.001, result
    assert result["errors_after_2s"] == 0, result
    assert result["rejoin_s"] is not None, result  # the restarted instance serves again
    assert result["rejoin_s"] < 2.0, result
    assert result["breaker_opened"] >= 1
    assert any("open" in e for e in result["events"])


async def test_a_hanging_instance_opens_the_breaker_which_answers_fast_then_closes(tmp_path: Path) -> None:
    result = await faults.hang_scenario(tmp_path, connections=8, before=0.5, hang=2.5, after=1.5, rate=RATE)
    assert result["open_s"] is not None, result
    assert result["open_s"] < 1.0, result  # the first-byte timeout (300 ms) and three failures
    assert result["answered_fast"] > 10 * result["timed_out"], result
    assert result["fast_p99_ms"] < 100, result
    # Only the requests in flight when it hung, and one probe per second of open breaker.
    assert result["hung_instance_reached"] <= 8 + 2 * 3, result
    assert result["close_s"] is not None, result
    assert result["close_s"] < 1.5, result  # open_for is 1 s: the next probe closes it
    assert result["errors_after_close"] == 0, result


async def test_retries_against_a_half_failing_service_stay_within_the_budget(tmp_path: Path) -> None:
    result = await faults.flaky_scenario(
        tmp_path, connections=8, duration=2.5, budget_percent=20.0, rate=RATE
    )
    assert result["requests"] > 500
    assert result["retry_share"] <= result["budget_cap_share"] + 0.001, result  # no retry storm
    assert result["budget_refusals"] > 0, result  # the budget, not the attempt count, was the limit
    assert result["success_rate"] > 0.55, result  # the retries that were made did help


async def test_reloads_under_load_fail_no_request_and_take_effect(tmp_path: Path) -> None:
    result = await faults.reload_scenario(tmp_path, connections=8, reloads=10, rate=RATE)
    assert "skipped" not in result, result
    assert result["refused"] == 0, result
    assert result["took_effect"], result
    assert result["requests"] > 500
    assert result["failed"] == 0, result
