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
# How late a timer may fire or an answer arrive on a loaded 2-core machine, beside the rest of
# the suite; the bounds below are the scenario's own timers plus this.
SCHEDULING = 1.0


async def test_killing_one_of_two_instances_loses_almost_nothing_and_it_rejoins(tmp_path: Path) -> None:
    result = await faults.kill_scenario(tmp_path, connections=8, before=1.0, down=2.5, after=2.0, rate=RATE)
    assert result["requests"] > 1000
    assert result["errors_before_kill"] == 0
    assert result["kill_error_rate"] <= 0.001, result
    assert result["errors_after_2s"] == 0, result
    assert result["rejoin_s"] is not None, result  # the restarted instance serves again
    # health checks every 500 ms, healthy after two: at most 1 s (a third round: 1.5 s)
    assert result["rejoin_s"] < 1.0 + SCHEDULING, result
    assert result["breaker_opened"] >= 1
    assert any("open" in e for e in result["events"])


async def test_a_hanging_instance_opens_the_breaker_which_answers_fast_then_closes(tmp_path: Path) -> None:
    result = await faults.hang_scenario(tmp_path, connections=8, before=0.5, hang=2.5, after=1.5, rate=RATE)
    # The scenario's timers: first_byte 300 ms, open_for 1 s. The time bounds below are what
    # they allow plus SCHEDULING (a loaded 2-core machine delays a timer or an answer by that
    # much); how many requests the breaker let through is bounded by counts.
    assert result["open_s"] is not None, result
    # the first-byte timeout and three failures: 0.3 s, well inside the 2.5 s hang
    assert result["open_s"] < 0.3 + SCHEDULING, result
    assert result["answered_fast"] > 10 * result["timed_out"], result
    # Answers while open do not wait on the instance: the typical one is immediate, and even
    # the slowest but 1 % come before the first-byte timeout such a wait would end with. (The
    # p99 under 100 ms this asserted measured the machine: 124 ms with it busy.)
    assert result["fast_p50_ms"] < 100, result
    assert result["fast_p99_ms"] < 300, result
    # Only the requests in flight when it hung, and one probe per second of open breaker.
    assert result["hung_instance_reached"] <= 8 + 2 * 3, result
    assert result["close_s"] is not None, result
    # Recovered just after a probe was sent, the breaker waits out that probe (0.3 s) and one
    # open_for (1 s), then the next probe closes it: 1.3 s (measured 1.30 on a busy machine,
    # against the 1.5 s this asserted). A probe that did not close it would add 1.3 s more.
    assert result["close_s"] < 0.3 + 1.0 + SCHEDULING, result
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
