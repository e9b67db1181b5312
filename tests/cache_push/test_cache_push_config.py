"""Config of the cache and push: every mistake named with its key path, and a YAML file that
uses both loads with the values it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeway.gateway.config import ConfigError, load_config, validate_config
from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.runtime import Gateway


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    return [(issue.key_path, issue.message) for issue in caught.value.issues]


def route(**fields: Any) -> dict[str, Any]:
    return {
        "services": {"b": {"instances": ["http://127.0.0.1:1"]}},
        "routes": [{"match": {"path": "/x"}, **fields}],
    }


def push_route(*topics: dict[str, Any], **action: Any) -> dict[str, Any]:
    return route(push={"topics": list(topics), **action})


PROXY = {"service": "b"}
ANY = {"pattern": "a", "allow": "anyone"}
T0 = "routes[0].push.topics[0]"
MISTAKES = [
    (route(proxy=PROXY, cache={}), "routes[0].cache.ttl", "missing"),
    (route(proxy=PROXY, cache={"ttl": "-1s"}), "routes[0].cache.ttl", "invalid duration"),
    (route(proxy=PROXY, cache={"ttl": 5, "statuses": [206]}), "routes[0].cache.statuses", "206"),
    (route(proxy=PROXY, cache={"ttl": 5, "statuses": [101]}), "routes[0].cache.statuses", "101"),
    (route(proxy=PROXY, cache={"ttl": 5, "vary": ["A", "a"]}), "routes[0].cache.vary", "twice"),
    (route(proxy=PROXY, cache={"ttl": 5, "vary": ["b c"]}), "routes[0].cache.vary[0]", "not a valid header"),
    (route(proxy=PROXY, cache={"ttl": 5, "tll": 1}), "routes[0].cache.tll", "did you mean 'ttl'"),
    ({**route(proxy=PROXY), "cache": {"redis": {"url": "http://r"}}}, "cache.redis.url", "should match"),
    (push_route(), "routes[0].push.topics", "at least 1"),
    (push_route({"pattern": "a//b", "allow": "anyone"}), f"{T0}.pattern", "segment ''"),
    (push_route({"pattern": "j/{id}", "allow": "owner"}), f"{T0}.allow", "owner_param"),
    (push_route({"pattern": "j/{i}", "allow": "owner", "owner_param": "u"}), f"{T0}.owner_param", "not a p"),
    (push_route({"pattern": "j/{id}", "allow": "anyone", "owner_field": "o"}), f"{T0}.allow", "only apply"),
    (push_route({"pattern": "a", "allow": "roles"}), f"{T0}.roles", "at least one role"),
    (push_route({"pattern": "a", "allow": "custom"}), f"{T0}.authoriser", "exactly when"),
    (push_route(ANY, transports=["smoke"]), "routes[0].push.transports[0]", "websocket"),
    ({**push_route(ANY), "push": {"bus": {"channels": [{"channel": "j", "topic": "j/{"}]}}},
     "push.bus.channels[0].topic", "template"),
    ({**push_route(ANY), "push": {"sources": ["not a path"]}}, "push.sources", "module:attribute"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "key", "message"), MISTAKES)
def test_config_mistakes_are_named_with_their_key(data: dict[str, Any], key: str, message: str) -> None:
    found = issues_of(data)
    assert any(k == key and message in m for k, m in found), found


def test_a_push_route_cannot_be_cached() -> None:
    cfg = validate_config(push_route({"pattern": "a", "allow": "anyone"}))
    cfg.routes[0].cache = validate_config(route(proxy={"service": "b"}, cache={"ttl": 1})).routes[0].cache
    with pytest.raises(GatewayError, match="push channel cannot be cached"):
        Gateway(cfg, None)


def test_a_yaml_file_with_cache_and_push(tmp_path: Path) -> None:
    path = tmp_path / "bff.yaml"
    path.write_text(
        """
name: web-bff
services:
  catalog: {instances: ["http://127.0.0.1:9001"]}
routes:
  - id: products
    match: {path: /products/**}
    proxy: {service: catalog}
    cache:
      {ttl: 30s, max_ttl: 5m, vary: [Accept-Language], ignore_query: [utm_source], max_entry_bytes: 256KiB}
  - id: push
    match: {path: /push}
    push:
      topics:
        - {pattern: "jobs/{id}", allow: owner, owner_field: owner}
        - {pattern: "users/{user}/inbox", allow: owner, owner_param: user}
      queue_size: 64
      ping_interval: 10s
cache:
  max_bytes: 32MiB
  redis: {url: "redis://127.0.0.1:6379/1", key_prefix: "web-bff:"}
push:
  replay_messages: 50
  bus:
    url: nats://127.0.0.1:4222
    channels:
      - {channel: jobs, topic: "jobs/{job_id}", types: [job.progress.v1, job.done.v1]}
"""
    )
    cfg = load_config(path)
    cache = cfg.routes[0].cache
    assert cache is not None
    assert (cache.ttl, cache.max_ttl, cache.max_entry_bytes) == (30.0, 300.0, 256 * 1024)
    assert cfg.cache.max_bytes == 32 * 1024 * 1024
    assert cfg.cache.redis is not None
    assert cfg.cache.redis.key_prefix == "web-bff:"
    push = cfg.routes[1].push
    assert push is not None
    assert (push.queue_size, push.ping_interval, push.transports) == (64, 10.0, ["websocket", "sse"])
    assert cfg.push is not None
    assert cfg.push.bus is not None
    assert cfg.push.bus.channels[0].types == ["job.progress.v1", "job.done.v1"]


def doc_example(name: str) -> dict[str, Any]:
    text = (Path(__file__).resolve().parents[2] / "docs" / name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    return loaded


def test_the_examples_in_the_cache_and_push_guides_are_valid() -> None:
    cache = doc_example("cache.md")
    cache["services"] = {"catalog": {"instances": ["http://127.0.0.1:9001"]}}
    assert validate_config(cache).routes[0].cache is not None
    push = doc_example("push.md")
    push["services"] = {"jobs": {"instances": ["http://127.0.0.1:9002"]}}
    cfg = validate_config(push)
    assert cfg.push is not None
    assert cfg.push.bus is not None


def test_gateways_without_cache_or_push_do_not_load_their_libraries() -> None:
    """redis-py, the broker clients and wsproto cost worker start time: only users pay it."""
    code = (
        "import sys; import edgeway.gateway.core.runtime; "
        "print(sorted(m for m in ('redis', 'nats', 'aio_pika', 'wsproto') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
