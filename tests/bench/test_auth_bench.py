"""``bench.auth`` in a tiny run: both legs measured in one run, the JSON keys the issue names."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import auth


@pytest.mark.slow
def test_a_tiny_run_measures_both_legs_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("wrk") is None:
        from conftest import require

        require("wrk")
    result = auth.run(json=True, duration=1, connections=[4], repetitions=1, warmup=0)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert result["failed"] is False, result["details"]["failed_legs"]
    for leg in ("plain", "auth"):
        run = result["details"]["legs"][leg]["runs"]["4"]
        assert run["errors"] == 0  # a 401 would count as a non-2xx error: the token was accepted
        assert run["rps"] > 100
    assert result["ratio"] == pytest.approx(result["auth_rps"] / result["plain_rps"], rel=1e-2)
    assert result["details"]["targets"]["auth/plain req/s at 4 conns"]["limit"] == 0.85
    assert result["auth_cpu_us"] > 0
    assert result["cpu_ratio"] == pytest.approx(result["plain_cpu_us"] / result["auth_cpu_us"], rel=1e-2)


def test_the_protected_config_passes_the_gateways_validation() -> None:
    from edgeway.gateway.config import validate_config

    config = auth.auth_config(
        port=8000, backend_url="http://127.0.0.1:9000", jwks_url="http://127.0.0.1:9001/j"
    )
    validated = validate_config(config)
    assert validated.auth is not None
    assert validated.routes[0].auth is not None
    assert validated.routes[0].auth.mode == "required"


def test_wrk_sends_the_leg_headers() -> None:
    from pathlib import Path

    from bench import wrk

    argv = wrk.command(
        "http://h/",
        connections=2,
        duration_s=1,
        script=Path("s.lua"),
        headers=[("Authorization", "Bearer t")],
    )
    assert argv[argv.index("-H") + 1] == "Authorization: Bearer t"
