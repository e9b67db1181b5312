"""The bus benchmark runs end to end with a tiny event count (numbers are for `./dev bench bus`)."""

from __future__ import annotations

import pytest

from bench import bus


@pytest.mark.timeout(180)
def test_the_bus_benchmark_reports_both_legs_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    result = bus.run(json=True, events=300, repetitions=1, gc_freeze=False)  # not in the test runner
    assert result["events"] == 300
    assert result["edgeway_eps"] > 0
    assert result["raw_eps"] > 0
    assert result["ratio"] == pytest.approx(result["edgeway_eps"] / result["raw_eps"], rel=0.01)
    (edgeway_run,) = result["details"]["edgeway_runs"]
    assert set(edgeway_run["cpu_us_per_event"]) == {"producer", "consumer", "nats_server"}
    assert '"edgeway_eps"' in capsys.readouterr().out
