from __future__ import annotations

import json

import pytest

from bench import aggregate
from conftest import require


@pytest.mark.slow
def test_a_short_run_reports_the_aiohttp_composition_and_the_delay_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require("wrk")
    result = aggregate.run(json=True, duration=1, connections=[4, 16], delay_ms=20, warmup=0)

    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert {"edgeway_rps", "aiohttp_rps", "ratio_aiohttp", "p50_ms", "backend_delay_ms"} <= set(result)
    legs = result["details"]["legs"]
    assert result["failed"] is False, {
        name: legs[name]["reason"] for name in result["details"]["failed_legs"]
    }
    assert result["backend_delay_ms"] == 20
    details = result["details"]
    assert (details["latency_connections"], details["throughput_connections"]) == (4, 16)
    # Three 20 ms calls in parallel: never faster than one, far from the 60 ms of a sequence.
    assert 20 <= details["aiohttp_p50_ms"] < 45
    assert 20 <= details["slowest_p50_ms"] < 30
    assert result["aiohttp_rps"] == details["legs"]["aiohttp"]["runs"]["16"]["rps"]
    # The aggregate endpoint runs its three calls in parallel too.
    assert details["legs"]["edgeway"]["status"] == "ok"
    assert 20 <= result["p50_ms"] < 45
    assert result["edgeway_rps"] == details["legs"]["edgeway"]["runs"]["16"]["rps"]
    assert result["edgeway_cpu_us"] > 0
    # The latency leg is meant to leave the gateway far from saturated: it says how far.
    assert result["edgeway_cpu_us_latency_leg"] > 0
    assert 0 < result["latency_leg_core_share"] < 0.5
    assert result["cpu_ratio_aiohttp"] == round(result["aiohttp_cpu_us"] / result["edgeway_cpu_us"], 3)
