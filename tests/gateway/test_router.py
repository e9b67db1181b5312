from __future__ import annotations

from typing import Any

import pytest

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.router import Router, rewrite_path


def make_router(*routes: dict[str, Any], case_sensitive: bool = True) -> Router:
    config = validate_config(
        {
            "services": {"svc": {"instances": ["http://127.0.0.1:9000"]}},
            "paths": {"case_sensitive": case_sensitive},
            "routes": [
                {"id": route.pop("id", None), "match": route, "proxy": {"service": "svc"}}
                if "proxy" not in route
                else route
                for route in routes
            ],
        }
    )
    return Router.from_config(config)


def matched_id(router: Router, path: str, method: str = "GET", host: str = "example.com") -> str | None:
    found = router.match(method, host, path)
    return None if found is None else found.route.id


def test_exact_beats_template_beats_prefix() -> None:
    router = make_router(
        {"id": "prefix", "path": "/users/**"},
        {"id": "template", "path": "/users/{id}"},
        {"id": "exact", "path": "/users/me"},
    )
    assert matched_id(router, "/users/me") == "exact"
    assert matched_id(router, "/users/42") == "template"
    assert matched_id(router, "/users/42/orders") == "prefix"
    assert matched_id(router, "/users") == "prefix"


def test_templates_with_more_literal_segments_win_then_earlier_literals() -> None:
    router = make_router(
        {"id": "two-params", "path": "/{a}/{b}/c"},
        {"id": "literal-first", "path": "/x/{b}/{c}"},
        {"id": "literal-last", "path": "/{a}/y/z"},
    )
    assert matched_id(router, "/x/y/z") == "literal-last"  # two literals beat one
    assert matched_id(router, "/x/q/c") == "literal-first"  # same count: the earlier literal wins
    assert matched_id(router, "/p/q/c") == "two-params"


def test_longer_prefix_wins_regardless_of_config_order() -> None:
    router = make_router(
        {"id": "root", "path": "/**"},
        {"id": "api", "path": "/api/**"},
        {"id": "api-v2", "path": "/api/v2/**"},
    )
    assert matched_id(router, "/api/v2/items") == "api-v2"
    assert matched_id(router, "/api/v1/items") == "api"
    assert matched_id(router, "/other") == "root"
    assert matched_id(router, "/") == "root"


def test_template_params_and_prefix_tail_are_captured() -> None:
    router = make_router(
        {"id": "review", "path": "/items/{item}/reviews/{review}"},
        {"id": "tenant", "path": "/t/{tenant}/**"},
    )
    found = router.match("GET", "h", "/items/7/reviews/99")
    assert found is not None
    assert found.params == {"item": "7", "review": "99"}
    found = router.match("GET", "h", "/t/acme/files/a.txt")
    assert found is not None
    assert (found.params, found.tail) == ({"tenant": "acme"}, "files/a.txt")


def test_a_parameter_never_matches_an_empty_segment() -> None:
    router = make_router({"id": "user", "path": "/users/{id}"})
    assert matched_id(router, "/users/") is None
    assert matched_id(router, "/users/1") == "user"


def test_prefix_matches_on_segment_boundaries_only() -> None:
    router = make_router({"id": "catalog", "path": "/catalog/**"})
    for path, tail in [("/catalog", ""), ("/catalog/", ""), ("/catalog/a/b", "a/b")]:
        found = router.match("GET", "h", path)
        assert found is not None
        assert found.tail == tail
    assert matched_id(router, "/catalogue") is None


def test_method_mismatch_falls_through_to_a_less_specific_route() -> None:
    router = make_router(
        {"id": "read", "path": "/users/{id}", "methods": ["GET", "HEAD"]},
        {"id": "any", "path": "/users/**"},
    )
    assert matched_id(router, "/users/1", "GET") == "read"
    assert matched_id(router, "/users/1", "DELETE") == "any"


def test_no_method_match_reports_allowed_methods_for_405() -> None:
    router = make_router(
        {"id": "read", "path": "/orders/{id}", "methods": ["GET", "HEAD"]},
        {"id": "write", "path": "/orders/{id}", "methods": ["PUT"]},
    )
    assert matched_id(router, "/orders/1", "PUT") == "write"
    assert router.match("DELETE", "h", "/orders/1") is None
    assert router.allowed_methods("h", "/orders/1") == {"GET", "HEAD", "PUT"}
    assert router.allowed_methods("h", "/nothing") == frozenset()


def test_host_specificity_is_decided_before_path_specificity() -> None:
    router = make_router(
        {"id": "any-exact", "path": "/items/list"},
        {"id": "wild", "path": "/items/**", "hosts": ["*.example.com"]},
        {"id": "deep-wild", "path": "/**", "hosts": ["*.eu.example.com"]},
        {"id": "host", "path": "/**", "hosts": ["api.example.com"]},
    )
    assert matched_id(router, "/items/list", host="api.example.com") == "host"
    assert matched_id(router, "/items/list", host="shop.example.com") == "wild"
    assert matched_id(router, "/items/list", host="x.eu.example.com") == "deep-wild"
    assert matched_id(router, "/items/list", host="other.org") == "any-exact"
    # A wildcard needs at least one label in front of the suffix.
    assert matched_id(router, "/items/list", host="example.com") == "any-exact"


def test_host_header_port_and_case_are_ignored() -> None:
    router = make_router({"id": "host", "path": "/**", "hosts": ["api.example.com", "[::1]"]})
    assert matched_id(router, "/a", host="API.Example.com:8443") == "host"
    assert matched_id(router, "/a", host="[::1]:8080") == "host"
    assert matched_id(router, "/a", host="api.example.com.") == "host"
    assert matched_id(router, "/a", host="evil.com") is None


def test_a_less_specific_host_group_is_tried_when_the_specific_one_has_no_path() -> None:
    router = make_router(
        {"id": "host-admin", "path": "/admin", "hosts": ["api.example.com"]},
        {"id": "fallback", "path": "/**"},
    )
    assert matched_id(router, "/public", host="api.example.com") == "fallback"


def test_case_insensitive_router_matches_lowercased_paths() -> None:
    router = make_router({"id": "cat", "path": "/Catalog/{id}"}, case_sensitive=False)
    assert matched_id(router, "/catalog/abc") == "cat"


def proxy_route(path: str, **proxy: Any) -> dict[str, Any]:
    return {"id": "r", "match": {"path": path}, "proxy": {"service": "svc", **proxy}}


@pytest.mark.parametrize(
    ("route", "request_path", "upstream"),
    [
        (proxy_route("/catalog/**", strip_prefix="/catalog"), "/catalog/items/1", "/items/1"),
        (proxy_route("/catalog/**", strip_prefix="/catalog/"), "/catalog", "/"),
        (proxy_route("/catalog/**", strip_prefix="/catalog"), "/catalog/", "/"),
        (proxy_route("/api/v1/**", strip_prefix="/api"), "/api/v1/x", "/v1/x"),
        (proxy_route("/items/{id}", rewrite="/v1/items/{id}"), "/items/42", "/v1/items/42"),
        (proxy_route("/old/**", rewrite="/new/{**}"), "/old/a/b", "/new/a/b"),
        (proxy_route("/t/{tenant}/**", rewrite="/tenants/{tenant}/{**}"), "/t/acme/x", "/tenants/acme/x"),
        (proxy_route("/same/**"), "/same/a%20b", "/same/a%20b"),
    ],
)
def test_rewrite_path_applies_strip_prefix_or_rewrite(
    route: dict[str, Any], request_path: str, upstream: str
) -> None:
    router = make_router(route)
    found = router.match("GET", "h", request_path)
    assert found is not None
    assert rewrite_path(found) == upstream


def test_compiled_routes_describe_themselves_for_the_admin_api() -> None:
    router = make_router({"id": "cat", "path": "/catalog/**", "methods": ["GET"]})
    assert router.routes[0].describe() == {
        "id": "cat",
        "action": "proxy",
        "path": "/catalog/**",
        "kind": "prefix",
        "methods": ["GET"],
        "hosts": None,
        "service": "svc",
        "strip_prefix": None,
        "rewrite": None,
        "websocket": False,
    }


def test_two_hundred_routes_each_match_themselves() -> None:
    routes: list[dict[str, Any]] = []
    for i in range(200):
        path = [f"/e{i}/health", f"/t{i}/{{id}}/x", f"/p{i}/**"][i % 3]
        routes.append({"id": f"r{i}", "path": path})
    router = make_router(*routes)
    for i in range(200):
        request = [f"/e{i}/health", f"/t{i}/7/x", f"/p{i}/deep/er"][i % 3]
        assert matched_id(router, request) == f"r{i}"
