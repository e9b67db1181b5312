"""The resilience blocks of a service and a route: defaults, compiled policies, located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgeway.gateway.config import ConfigError, load_config, validate_config
from edgeway.gateway.upstream.resilient import guard_policy


def service_config(**service: object) -> dict[str, object]:
    return {
        "services": {"svc": {"instances": ["http://127.0.0.1:9001", "http://127.0.0.1:9002"], **service}},
        "routes": [{"match": {"path": "/**"}, "proxy": {"service": "svc"}}],
    }


def test_a_service_without_resilience_compiles_to_no_guard() -> None:
    cfg = validate_config(service_config())
    assert guard_policy(cfg.services["svc"]) is None


def test_empty_blocks_take_the_documented_defaults() -> None:
    cfg = validate_config(
        service_config(
            breaker={}, retry={}, outlier_ejection={}, health_check={}, concurrency={"max_concurrent": 9}
        )
    )
    policy = guard_policy(cfg.services["svc"])
    assert policy is not None
    assert policy.instance_breaker is not None
    assert policy.instance_breaker.consecutive_failures == 5
    assert policy.instance_breaker.window == 10.0
    assert policy.service_breaker is not None
    assert policy.breaker_statuses == frozenset({500, 502, 503, 504})
    assert policy.retry is not None
    assert policy.retry.attempts == 2
    assert policy.retry.retry_on == frozenset({502, 503, 504})
    assert policy.retry.budget.ratio == pytest.approx(0.2)
    assert policy.outlier is not None
    assert policy.outlier.base_ejection == 30.0
    assert policy.health is not None
    assert policy.health.path == "/health/ready"
    assert policy.concurrency is not None
    assert policy.concurrency.limit == 9
    assert policy.panic_threshold == 50.0


def test_the_panic_threshold_compiles_and_is_a_percentage() -> None:
    policy = guard_policy(validate_config(service_config(health_check={}, panic_threshold=0)).services["svc"])
    assert policy is not None
    assert policy.panic_threshold == 0.0
    with pytest.raises(ConfigError, match=r"panic_threshold: Input should be less than or equal to 100"):
        validate_config(service_config(health_check={}, panic_threshold=150))


def test_units_and_switches_compile_into_the_policies() -> None:
    cfg = validate_config(
        service_config(
            breaker={"instance": {"open_for": "250ms", "min_requests": 3}, "service": None},
            retry={"backoff": "5ms", "max_backoff": "1s", "budget": {"percent": 50, "window": "1m"}},
        )
    )
    policy = guard_policy(cfg.services["svc"])
    assert policy is not None
    assert policy.service_breaker is None
    assert policy.instance_breaker is not None
    assert policy.instance_breaker.open_for == 0.25
    assert policy.instance_breaker.min_calls == 3
    assert policy.retry is not None
    assert policy.retry.backoff == 0.005
    assert policy.retry.budget.window == 60.0
    assert policy.retry.budget.ratio == 0.5


def test_each_mistake_is_reported_with_its_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            services:
              svc:
                instances: ["http://127.0.0.1:9001"]
                breaker:
                  failure_statuses: [500, 500]
                  instance: {failure_rate: 1.5}
                retry: {backoff: 1s, max_backoff: 100ms}
                health_check: {interval: 1s, timeout: 2s}
                outlier_ejection: {base_ejection_time: 1m, max_ejection_time: 10s}
            routes:
              - match: {path: /**}
                proxy: {service: svc}
                concurrency: {max_concurrent: 10, queue: 5}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    found = {issue.key_path: (issue.line, issue.message) for issue in caught.value.issues}
    assert found["services.svc.breaker.failure_statuses"][1] == "status 500 is listed twice"
    assert found["services.svc.breaker.instance.failure_rate"][0] == 6
    assert "below backoff" in found["services.svc.retry.max_backoff"][1]
    assert found["services.svc.retry.max_backoff"][0] == 7
    assert "exceeds interval" in found["services.svc.health_check.timeout"][1]
    assert "below base_ejection_time" in found["services.svc.outlier_ejection.max_ejection_time"][1]
    assert "needs max_wait" in found["routes[0].concurrency.max_wait"][1]


def test_concurrency_needs_a_bound_and_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"concurrency\.max_concurrent"):
        validate_config(service_config(concurrency={}))
    with pytest.raises(ConfigError, match=r"retry\.retry_on\[0\]: Input should be less than or equal to 599"):
        validate_config(service_config(retry={"retry_on": [700]}))
    with pytest.raises(ConfigError, match=r"breaker\.open_for"):
        validate_config(service_config(breaker={"open_for": "1s"}))
