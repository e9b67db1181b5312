from __future__ import annotations

import json
import shutil

import pytest

from bench import gateway, proxy
from bench.errors import BenchError


@pytest.mark.slow
def test_a_short_run_measures_every_available_leg_and_prints_one_json_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("wrk") is None:
        from conftest import require

        require("wrk")
    legs = ["direct", "aiohttp"]
    if shutil.which("nginx"):
        legs.append("nginx")
    if gateway.unavailable_reason() is None:
        legs.append("edgeway")
    result = proxy.run(json=True, duration=1, connections=[8], warmup=0, only=legs, idle_connections=50)

    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert {"edgeway_rps", "nginx_rps", "aiohttp_rps", "ratio_nginx", "ratio_aiohttp", "p99_ms"} <= set(
        result
    )
    assert result["failed"] is False, result["details"]["failed_legs"]
    details = result["details"]
    for name in legs:
        leg = details["legs"][name]
        assert leg["status"] == "ok"
        assert leg["runs"]["8"]["rps"] > 100
        assert leg["runs"]["8"]["errors"] == 0
    assert details["legs"]["aiohttp"]["idle"]["connections"] == 50
    assert result["aiohttp_rps"] == details["legs"]["aiohttp"]["runs"]["8"]["rps"]
    if "edgeway" in legs:
        assert result["ratio_aiohttp"] == pytest.approx(
            result["edgeway_rps"] / result["aiohttp_rps"], rel=1e-2
        )
        assert result["idle_rss_mb"] is not None
    else:
        assert result["edgeway_rps"] is None
        assert result["ratio_aiohttp"] is None
    assert details["machine"]["cores"] >= 1


def test_unknown_legs_are_refused_before_anything_starts() -> None:
    with pytest.raises(BenchError, match="unknown leg"):
        proxy.run(json=True, only=["haproxy"])


def test_gateway_config_is_the_documented_proxy_shape() -> None:
    config = gateway.proxy_config(port=8000, backend_url="http://127.0.0.1:9000")
    assert config["listen"] == {"host": "127.0.0.1", "port": 8000}
    assert config["access_log"] == {"enabled": True}
    assert config["routes"] == [{"id": "all", "match": {"path": "/**"}, "proxy": {"service": "backend"}}]


def test_gateway_config_passes_the_gateways_own_validation() -> None:
    config_module = pytest.importorskip("edgeway.gateway.config")
    config = gateway.proxy_config(port=8000, backend_url="http://127.0.0.1:9000")
    validated = config_module.validate_config(config)
    assert validated.access_log.enabled is True
