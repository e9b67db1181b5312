from __future__ import annotations

from typing import Any

import pytest

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.gateway.config.patterns import PatternError, PatternKind, parse_path_pattern
from edgeway.gateway.config.units import parse_duration, parse_size

SERVICES = {
    "catalog": {"instances": ["http://127.0.0.1:9001"]},
    "orders": {"instances": ["http://[::1]:9002"]},
}


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": SERVICES,
        "routes": [{"match": {"path": "/catalog/**"}, "proxy": {"service": "catalog"}}],
    }
    base.update(overrides)
    return base


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    return [(issue.key_path, issue.message) for issue in caught.value.issues]


def test_defaults_match_the_documented_shape() -> None:
    cfg = validate_config(config())
    assert (cfg.version, cfg.name, cfg.listen.port, cfg.workers) == (1, "gateway", 8080, 1)
    assert cfg.admin is not None
    assert cfg.admin.port == 8081
    assert cfg.limits.max_header_bytes == 16384
    assert cfg.limits.max_body_bytes == 10 * 1024 * 1024
    assert cfg.limits.keepalive_timeout == 75.0
    assert cfg.paths.encoded_slash == "reject"
    service = cfg.services["catalog"]
    assert (service.balancer, service.timeouts.total, service.pool.max_connections) == (
        "round_robin",
        30.0,
        None,
    )
    assert service.pool.max_idle == 1024
    assert cfg.services["orders"].addresses == [("::1", 9002)]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), (0.5, 0.5), ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5)],
)
def test_durations_accept_numbers_and_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [(16384, 16384), ("16KiB", 16384), ("10MiB", 10485760), ("1GB", 10**9), ("512B", 512)]
)
def test_sizes_accept_ints_and_units(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_bad_durations_and_sizes_name_the_accepted_units() -> None:
    problems = issues_of(
        config(limits={"header_read_timeout": "10 minutes", "max_body_bytes": "1.5B", "max_headers": True})
    )
    by_key = dict(problems)
    assert "ms, s, m, h, d" in by_key["limits.header_read_timeout"]
    assert "whole number of bytes" in by_key["limits.max_body_bytes"]
    assert "limits.max_headers" in by_key
    assert "boolean" in issues_of(config(limits={"keepalive_timeout": True}))[0][1]


def test_null_body_limit_means_unlimited_and_null_admin_disables_it() -> None:
    cfg = validate_config(config(limits={"max_body_bytes": None}, admin=None))
    assert cfg.limits.max_body_bytes is None
    assert cfg.admin is None


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    [(key, message)] = issues_of(config(listen={"prot": 80}))
    assert key == "listen.prot"
    assert "did you mean 'port'" in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://127.0.0.1", "explicit port, e.g. https://host:8000"),
        ("http://127.0.0.1", "explicit port"),
        ("tcp://127.0.0.1:1", "http:// or https:// URL"),
        ("http://127.0.0.1:9001/base", "only scheme, host and port"),
    ],
)
def test_instance_urls_must_be_http_or_https_with_host_and_port(url: str, fragment: str) -> None:
    [(key, message)] = issues_of(config(services={"catalog": {"instances": [url]}}))
    assert key == "services.catalog.instances[0]"
    assert fragment in message


def test_unknown_service_is_reported_with_the_known_ones() -> None:
    [(key, message)] = issues_of(config(routes=[{"match": {"path": "/x"}, "proxy": {"service": "catalgo"}}]))
    assert key == "routes[0].proxy.service"
    assert message == "unknown service 'catalgo' (known: catalog, orders)"


def test_duplicate_ids_and_identical_routes_are_errors() -> None:
    route = {"id": "a", "match": {"path": "/x", "methods": ["get", "POST"]}, "proxy": {"service": "catalog"}}
    same = {"id": "b", "match": {"path": "/x", "methods": ["POST", "GET"]}, "proxy": {"service": "orders"}}
    problems = issues_of(config(routes=[route, dict(route), same]))
    assert ("routes[1].id", "duplicate route id 'a' (first used by routes[0])") in problems
    assert sum(key.endswith(".match") for key, _ in problems) == 2


def test_same_path_with_different_methods_or_hosts_is_fine() -> None:
    routes = [
        {"match": {"path": "/x", "methods": ["GET"]}, "proxy": {"service": "catalog"}},
        {"match": {"path": "/x", "methods": ["POST"]}, "proxy": {"service": "catalog"}},
        {"match": {"path": "/x", "hosts": ["a.example.com"]}, "proxy": {"service": "catalog"}},
    ]
    cfg = validate_config(config(routes=routes))
    assert [r.id for r in cfg.routes] == ["x", "x-2", "x-3"]


def test_route_ids_are_derived_from_paths_avoiding_explicit_ones() -> None:
    routes = [
        {"match": {"path": "/users/{id}"}, "proxy": {"service": "catalog"}},
        {"match": {"path": "/"}, "proxy": {"service": "catalog"}},
        {"match": {"path": "/catalog/**"}, "proxy": {"service": "catalog"}},
        {"id": "catalog", "match": {"path": "/c"}, "proxy": {"service": "catalog"}},
    ]
    assert [r.id for r in validate_config(config(routes=routes)).routes] == [
        "users-id",
        "root",
        "catalog-2",
        "catalog",
    ]


def test_a_route_needs_exactly_one_action() -> None:
    [(key, message)] = issues_of(config(routes=[{"match": {"path": "/x"}}]))
    assert key == "routes[0]"
    assert "exactly one action of: proxy, aggregate, endpoint, push, transcode (found: none)" in message


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("catalog", "must start with '/'"),
        ("/a/**/b", "'**' may only be the last segment"),
        ("/a/{id}/{id}", "uses parameter {id} twice"),
        ("/a/x{id}", "is not a parameter"),
        ("/a/*", "'**' segment"),
        ("/a//b", "empty segment"),
        ("/a/../b", "dot segment"),
        ("/a/%7e", "write '%7e' as the character '~'"),
        ("/a b", "percent-encode"),
    ],
)
def test_malformed_path_patterns_say_how_to_fix_them(path: str, fragment: str) -> None:
    with pytest.raises(PatternError, match=None) as caught:
        parse_path_pattern(path)
    assert fragment in str(caught.value)
    [(key, _)] = issues_of(config(routes=[{"match": {"path": path}, "proxy": {"service": "catalog"}}]))
    assert key == "routes[0].match.path"


def test_pattern_kinds() -> None:
    assert parse_path_pattern("/a/b").kind is PatternKind.EXACT
    assert parse_path_pattern("/").segments == ("",)
    template = parse_path_pattern("/a/{x}/{y}/")
    assert (template.kind, template.param_names, template.segments) == (
        PatternKind.TEMPLATE,
        ("x", "y"),
        ("a", None, None, ""),
    )
    prefix = parse_path_pattern("/t/{tenant}/**")
    assert (prefix.kind, prefix.segments) == (PatternKind.PREFIX, ("t", None))
    assert parse_path_pattern("/**").segments == ()
    assert parse_path_pattern("/a%3a").segments == ("a%3A",)


@pytest.mark.parametrize(
    ("path", "proxy", "key", "fragment"),
    [
        ("/a/{id}", {"rewrite": "/b/{idd}"}, "rewrite", "does not define (defined: id)"),
        ("/a/{id}", {"rewrite": "/b/{**}"}, "rewrite", "not a prefix pattern"),
        ("/a/**", {"rewrite": "/b/{**"}, "rewrite", "unbalanced"),
        ("/a/**", {"rewrite": "b"}, "rewrite", "must start with '/'"),
        ("/a/**", {"strip_prefix": "/b"}, "strip_prefix", "is not a prefix"),
        ("/a/**", {"strip_prefix": "/a", "rewrite": "/x"}, "rewrite", "not both"),
    ],
)
def test_rewrite_and_strip_prefix_are_checked_against_the_path(
    path: str, proxy: dict[str, Any], key: str, fragment: str
) -> None:
    route = {"match": {"path": path}, "proxy": {"service": "catalog", **proxy}}
    problems = issues_of(config(routes=[route]))
    assert any(k == f"routes[0].proxy.{key}" and fragment in m for k, m in problems), problems


def test_methods_and_hosts_are_normalised_and_checked() -> None:
    route = {
        "match": {"path": "/x", "methods": ["get"], "hosts": ["API.example.com.", "*.Example.org"]},
        "proxy": {"service": "catalog"},
    }
    cfg = validate_config(config(routes=[route]))
    assert cfg.routes[0].match.methods == ["GET"]
    assert cfg.routes[0].match.hosts == ["api.example.com", "*.example.org"]
    bad = {"match": {"path": "/x", "hosts": ["api.example.com:8080"]}, "proxy": {"service": "catalog"}}
    [(key, message)] = issues_of(config(routes=[bad]))
    assert key == "routes[0].match.hosts"
    assert "no port" in message


def test_header_rules_reject_bad_names_values_and_conflicts() -> None:
    proxy = {
        "service": "catalog",
        "request_headers": {"set": {"X A": "1", "X-B": "a\r\nb", "X-C": "1"}, "remove": ["x-c"]},
    }
    keys = [key for key, _ in issues_of(config(routes=[{"match": {"path": "/x"}, "proxy": proxy}]))]
    assert "routes[0].proxy.request_headers.set.[X A]" in keys or any("X A" in k for k in keys)
    assert "routes[0].proxy.request_headers.set.X-B" in keys


def test_timeouts_must_fit_in_the_total() -> None:
    [(key, message)] = issues_of(
        config(services={"catalog": {"instances": ["http://h:1"], "timeouts": {"connect": "40s"}}})
    )
    assert key == "services.catalog.timeouts.connect"
    assert "exceeds total" in message


def test_a_phase_left_at_its_default_is_capped_by_a_shorter_total() -> None:
    # docs/aggregation.md: `timeouts: {first_byte: 300ms, total: 1s}` was refused for the
    # default connect timeout (2 s), a key the user never wrote.
    cfg = validate_config(
        config(
            services={
                "catalog": {"instances": ["http://h:1"], "timeouts": {"first_byte": "300ms", "total": "1s"}}
            }
        )
    )
    timeouts = cfg.services["catalog"].timeouts
    assert (timeouts.connect, timeouts.first_byte, timeouts.total) == (1.0, 0.3, 1.0)
    only_total = validate_config(
        config(services={"catalog": {"instances": ["http://h:1"], "timeouts": {"total": "5s"}}})
    )
    assert (
        only_total.services["catalog"].timeouts.connect,
        only_total.services["catalog"].timeouts.first_byte,
    ) == (
        2.0,
        5.0,
    )
    [(key, _)] = issues_of(
        config(
            services={
                "catalog": {"instances": ["http://h:1"], "timeouts": {"first_byte": "2s", "total": "1s"}}
            }
        )
    )
    assert key == "services.catalog.timeouts.first_byte"  # written by the user: still an error


def test_only_version_1_is_read() -> None:
    [(key, message)] = issues_of(config(version=2))
    assert key == ""
    assert "this edgeway reads version 1" in message


def test_port_0_takes_a_free_port_with_one_worker_only() -> None:
    base: dict[str, Any] = {"listen": {"port": 0}, "admin": {"port": 0}}
    assert validate_config(base).listen.port == 0
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "workers": 2})
    message = str(caught.value)
    assert "listen.port: port 0 (a free port) needs one worker, not 2" in message
    assert "admin.port: port 0 (a free port) needs one worker, not 2" in message
