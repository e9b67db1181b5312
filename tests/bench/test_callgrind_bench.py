"""``bench callgrind --tracing``: the gateway config it runs with tracing on."""

from __future__ import annotations

import pytest

from bench.callgrind import tracing_config
from bench.errors import BenchError
from bench.gateway import proxy_config
from edgeway.gateway.config import validate_config


def test_tracing_on_is_a_gateway_config_exporting_to_the_backend() -> None:
    config = proxy_config(port=8080, backend_url="http://127.0.0.1:9000")
    config["telemetry"] = tracing_config(0.25, "http://127.0.0.1:9000/v1/traces")
    tracing = validate_config(config).telemetry.tracing
    assert tracing.enabled
    assert tracing.sample_ratio == 0.25
    assert tracing.endpoint == "http://127.0.0.1:9000/v1/traces"


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_sample_ratio_outside_0_to_1_is_refused(ratio: float) -> None:
    with pytest.raises(BenchError, match="sample ratio between 0 and 1"):
        tracing_config(ratio, "http://127.0.0.1:9000/v1/traces")
