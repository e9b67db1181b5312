"""The config of HTTP/2 services and gRPC health checks, and the gRPC health check's messages."""

from __future__ import annotations

from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.errors import ConfigError
from edgeway.gateway.upstream.clusters import make_cluster
from edgeway.http.limits import PoolLimits, UpstreamTimeouts
from edgeway.resilience.grpc_health import check_request, serving_status


def config(service: dict[str, Any], proxy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "services": {
            "ledger": {"instances": ["http://127.0.0.1:50051"], **service},
            "other": {"instances": ["http://127.0.0.1:50052"]},
        },
        "routes": [{"match": {"path": "/kittest.v1.Ledger/**"}, "proxy": proxy or {"service": "ledger"}}],
    }


def test_services_speak_http1_unless_they_say_h2() -> None:
    assert validate_config(config({})).services["ledger"].protocol == "http1"
    svc = validate_config(config({"protocol": "h2"})).services["ledger"]
    assert svc.protocol == "h2"
    assert svc.alpn == ("h2",)


def test_a_grpc_health_check_needs_h2() -> None:
    with pytest.raises(ConfigError, match="a gRPC health check needs `protocol: h2`"):
        validate_config(config({"health_check": {"kind": "grpc"}}))
    cfg = validate_config(
        config({"protocol": "h2", "health_check": {"kind": "grpc", "grpc_service": "a.v1.B"}})
    )
    check = cfg.services["ledger"].health_check
    assert check is not None
    assert check.policy().kind == "grpc"
    assert check.policy().grpc_service == "a.v1.B"


def test_a_grpc_service_name_is_a_protobuf_name() -> None:
    with pytest.raises(ConfigError, match="grpc_service"):
        validate_config(config({"protocol": "h2", "health_check": {"kind": "grpc", "grpc_service": "a b"}}))


def test_only_a_plain_proxy_route_sends_to_an_h2_service() -> None:
    split = {"split": [{"service": "ledger", "weight": 50}, {"service": "other", "weight": 50}]}
    with pytest.raises(ConfigError, match="service 'ledger' has `protocol: h2`"):
        validate_config(config({"protocol": "h2"}, split))
    with pytest.raises(ConfigError, match="service 'ledger' has `protocol: h2`"):
        validate_config(config({"protocol": "h2"}, {"service": "ledger", "websocket": True}))


@pytest.mark.parametrize("service", ["", "kittest.v1.Ledger", "x" * 200])
def test_the_check_request_is_protobufs(service: str) -> None:
    message = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert check_request(service) == b"\0" + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_the_serving_status_is_read_from_protobufs_message(status: int) -> None:
    message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert serving_status(b"\0" + len(message).to_bytes(4, "big") + message) == status


def test_an_unreadable_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="not one uncompressed gRPC message"):
        serving_status(b"\1\0\0\0\0")
    with pytest.raises(ValueError, match="cut short"):
        serving_status(b"\0\0\0\0\x09\x08")


async def test_instances_of_an_h2_service_get_http2_pools_also_when_discovered() -> None:
    cluster = make_cluster(
        "ledger",
        ["http://127.0.0.1:50051", "https://ledger.internal:443"],
        "round_robin",
        UpstreamTimeouts(),
        PoolLimits(),
        http2=True,
    )
    plain, secure = cluster.endpoints
    assert plain.h2 is not None
    assert plain.h2.tls is None
    assert secure.h2 is not None
    assert secure.h2.tls is not None
    assert secure.tls is secure.h2.tls  # the health check's context offers h2 too
    assert secure.h2.server_hostname == "ledger.internal"
    change = cluster.update(["http://127.0.0.1:50051", "http://127.0.0.1:50052"])
    (added,) = change.added
    assert added.h2 is not None
    (removed,) = change.removed
    assert removed is secure
    assert secure.h2.closed  # drained at once: nothing in flight
    http1 = make_cluster("web", ["http://127.0.0.1:8000"], "round_robin", UpstreamTimeouts(), PoolLimits())
    assert http1.endpoints[0].h2 is None
