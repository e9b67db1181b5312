from __future__ import annotations

import json
import shutil

import pytest

from bench import gateway, slow
from bench.errors import BenchError


def test_unknown_legs_are_refused_before_anything_starts() -> None:
    with pytest.raises(BenchError, match="unknown leg"):
        slow.run(json=True, only=["haproxy"])


@pytest.mark.slow
def test_a_short_run_behind_a_delayed_backend_reports_every_leg(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("wrk") is None:
        from conftest import require

        require("wrk")
    legs = ["direct", "aiohttp"] + (["edgeway"] if gateway.unavailable_reason() is None else [])
    result = slow.run(json=True, duration=1, connections=[50], delay_ms=20, warmup=0, only=legs)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert result["failed"] is False, result["details"]["failed_legs"]
    for name in legs:
        run = result["details"]["legs"][name]["runs"]["50"]
        assert run["errors"] == 0
        assert run["p50_ms"] >= 20  # every answer waited for the backend's delay
