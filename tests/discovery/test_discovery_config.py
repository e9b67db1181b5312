from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeway.gateway.config import ConfigError, load_config, validate_config


def config(service: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "services": {"shop": service},
        "routes": [{"match": {"path": "/**"}, "proxy": {"service": "shop"}}],
        **top,
    }


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    return [(issue.key_path, issue.message) for issue in caught.value.issues]


def test_a_service_with_discovery_needs_no_static_instances() -> None:
    dns = {"name": "shop.svc.cluster.local", "port": 8000}
    cfg = validate_config(config({"discovery": {"dns": dns}}))
    svc = cfg.services["shop"]
    assert svc.instances == []
    assert svc.discovery is not None
    rule = svc.discovery.dns
    assert rule is not None
    assert (rule.type, rule.port, rule.min_ttl, rule.max_ttl, rule.nameservers) == ("A", 8000, 1.0, 300.0, [])


def test_a_service_needs_instances_or_discovery() -> None:
    assert issues_of(config({})) == [
        ("services.shop.instances", "a service needs at least one instance, or a `discovery` rule")
    ]


def test_discovery_takes_exactly_one_source() -> None:
    both = {"dns": {"name": "a.b", "port": 1}, "consul": {"service": "shop"}}
    [(key, message)] = issues_of(config({"discovery": both}))
    assert key == "services.shop.discovery"
    assert "exactly one of: dns, nats_kv, consul (found: dns, consul)" in message
    [(key, message)] = issues_of(config({"discovery": {}}))
    assert "(found: none)" in message


@pytest.mark.parametrize(
    ("dns", "key", "fragment"),
    [
        ({"name": "shop.local"}, "port", "type A needs the instances' port"),
        ({"name": "_http._tcp.shop.local", "type": "SRV", "port": 80}, "port", "SRV records carry the port"),
        ({"name": "shop.local", "port": 80, "min_ttl": "10s", "max_ttl": "5s"}, "min_ttl", "exceeds max_ttl"),
        ({"name": "shop local", "port": 80}, "name", "is not a DNS name"),
        ({"name": "shop.local", "port": 80, "nameservers": ["dns.example"]}, "nameservers", "IP address"),
        ({"name": "shop.local", "port": 80, "type": "MX"}, "type", "'A' or 'SRV'"),
    ],
)
def test_dns_rules_are_checked(dns: dict[str, Any], key: str, fragment: str) -> None:
    [(found, message)] = issues_of(config({"discovery": {"dns": dns}}))
    assert found.startswith(f"services.shop.discovery.dns.{key}")
    assert fragment in message


def test_nats_kv_and_consul_rules_are_checked() -> None:
    bad_kv = {"nats_kv": {"url": "http://x:4222", "service": "a.b"}}
    found = dict(issues_of(config({"discovery": bad_kv})))
    assert "use nats://host:4222" in found["services.shop.discovery.nats_kv.url"]
    assert "letters, digits" in found["services.shop.discovery.nats_kv.service"]
    [(key, message)] = issues_of(config({"discovery": {"consul": {"service": "shop", "url": "consul:8500"}}}))
    assert key == "services.shop.discovery.consul.url"
    assert "http or https URL" in message


def test_reload_settings_have_defaults_and_are_checked() -> None:
    cfg = validate_config(config({"instances": ["http://a:1"]}))
    assert (cfg.reload.watch, cfg.reload.interval, cfg.reload.drain_timeout) == (True, 2.0, 30.0)
    [(key, _)] = issues_of(config({"instances": ["http://a:1"]}, reload={"interval": 0}))
    assert key == "reload.interval"


def test_discovery_errors_in_a_file_name_line_and_column(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "services:\n"
        "  shop:\n"
        "    discovery:\n"
        "      dns: {name: shop.local, type: SRV, port: 80}\n"
        "routes:\n"
        "  - {match: {path: '/**'}, proxy: {service: shop}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    [issue] = caught.value.issues
    assert str(issue).startswith(f"{cfg}:4:")
    assert "services.shop.discovery.dns.port: SRV records carry the port" in str(issue)
