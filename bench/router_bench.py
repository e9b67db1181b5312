"""Router micro-benchmark: matches per second over 200 routes (not a test; run it by hand).

.venv/bin/python bench/router_bench.py
"""

from __future__ import annotations

import time

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.paths import normalize_path
from edgeway.gateway.core.router import Router


def build_router(route_count: int = 200) -> Router:
    """A realistic mix: a third exact, a third templates, a third prefixes, some host-bound."""
    routes = []
    for i in range(route_count):
        kind = i % 3
        if kind == 0:
            path = f"/svc{i}/health"
        elif kind == 1:
            path = f"/svc{i}/items/{{id}}/reviews/{{rid}}"
        else:
            path = f"/svc{i}/**"
        route: dict[str, object] = {"match": {"path": path}, "proxy": {"service": "backend"}}
        if i % 10 == 0:
            route["match"] = {"path": path, "hosts": [f"h{i}.example.com", "*.example.org"]}
        if i % 7 == 0:
            route["match"] = {**route["match"], "methods": ["GET", "HEAD"]}  # type: ignore[dict-item]
        routes.append(route)
    config = validate_config(
        {"services": {"backend": {"instances": ["http://127.0.0.1:9000"]}}, "routes": routes}
    )
    return Router.from_config(config)


def run(seconds: float = 1.0, route_count: int = 200) -> dict[str, float]:
    """Print and return matches/s for exact, template, prefix, miss, and normalise+match."""
    router = build_router(route_count)
    cases = {
        "exact": ("GET", "api.local", "/svc99/health"),
        "template": ("GET", "api.local", "/svc100/items/42/reviews/7"),
        "prefix": ("GET", "api.local", "/svc101/a/b/c"),
        "host-bound": ("GET", "h120.example.com:8080", "/svc120/health"),
        "miss (404)": ("GET", "api.local", "/nothing/here"),
    }
    results: dict[str, float] = {}
    for name, (method, host, path) in cases.items():
        results[name] = _rate(lambda m=method, h=host, p=path: router.match(m, h, p), seconds)
    raw = b"/svc101/a/b/c"
    results["normalise+prefix"] = _rate(
        lambda: router.match("GET", "api.local", normalize_path(raw, "reject", True)), seconds
    )
    for name, rate in results.items():
        print(f"{name:>18}: {rate / 1e6:6.2f} M matches/s  ({1e6 / rate:5.2f} µs each)")
    return results


def _rate(call: object, seconds: float) -> float:
    assert callable(call)
    count, batch = 0, 1000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            call()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


if __name__ == "__main__":
    run()
