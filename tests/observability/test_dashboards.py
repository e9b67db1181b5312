"""The production dashboards and alert rules in deploy/observability: the rules pass Debian's
``promtool check rules`` and their unit tests (``promtool test rules``), every dashboard query
is valid PromQL over metrics edgeway exports, and a real Prometheus scraping a running gateway
and a kit service finds the series the dashboards query, with the numbers of what was sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_helpers import serve_app

from conftest import bound_socket, listening_ports, require
from edgeway.gateway.config import validate_config
from edgeway.gateway.process.serve import GatewayServer
from edgeway.service import create_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "observability"
DASHBOARDS = sorted((DEPLOY / "dashboards").glob("*.json"))
# A metric name in a query: what a selector, a range or a function argument starts with.
_METRIC = re.compile(r"\b((?:edgeway|http_server)_[a-z_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"]


def _concrete(query: str) -> str:
    """A dashboard query with Grafana's variables filled in, as Prometheus would get it."""
    return query.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$route", ".*")


def test_dashboards_are_grafana_dashboards_with_unique_panels() -> None:
    assert {path.stem for path in DASHBOARDS} == {"gateway", "services", "bus"}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == f"edgeway-{path.stem}"
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        assert {"datasource", "job"} <= variables
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], f"{path.name}: {panel['title']} queries nothing"
                assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_every_metric_the_dashboards_and_alerts_name_is_one_edgeway_exports() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "edgeway").rglob("*.py"))
    texts = [path.read_text() for path in DASHBOARDS] + [(DEPLOY / "alerts.yml").read_text()]
    named = {m for text in texts for m in _METRIC.findall(text)}
    assert len(named) > 30
    unknown = []
    for name in sorted(named):
        base = name
        for suffix in _SUFFIXES:
            base = base.removesuffix(suffix)
        if f'"{name}"' not in source and f'"{base}"' not in source:
            unknown.append(name)
    assert unknown == []


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require("promtool")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each query becomes a recording rule.
    rules = [
        {"record": f"dashboard:{path.stem}:{i}", "expr": _concrete(query)}
        for path in DASHBOARDS
        for i, query in enumerate(_queries(json.loads(path.read_text())))
    ]
    assert len(rules) > 40
    file = tmp_path / "dashboard-queries.yml"
    file.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = _promtool("check", "rules", str(file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- a real Prometheus ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def prometheus(scrape: list[dict[str, Any]]) -> AsyncIterator[str]:
    """The Debian ``prometheus`` on a loopback port of its own choosing (port 0: it cannot be
    held for it, and a port found free could be taken before it binds), scraping ``scrape``
    every 200 ms."""
    require("prometheus")
    with tempfile.TemporaryDirectory(prefix="edgeway-prometheus-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            json.dumps(
                {"global": {"scrape_interval": "200ms", "scrape_timeout": "150ms"}, "scrape_configs": scrape}
            )
        )
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ports: list[int] = []
            for _ in range(300):
                if proc.poll() is not None:
                    raise AssertionError(f"prometheus exited: {proc.stderr.read() if proc.stderr else ''!r}")
                ports = listening_ports(proc.pid)
                if ports:
                    break
                await asyncio.sleep(0.05)
            assert len(ports) == 1, f"prometheus listens on {ports}"
            url = f"http://127.0.0.1:{ports[0]}"
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    if proc.poll() is not None:
                        raise AssertionError(
                            f"prometheus exited: {proc.stderr.read() if proc.stderr else ''!r}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{url}/-/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)


async def _query(http: httpx.AsyncClient, url: str, promql: str) -> dict[frozenset[tuple[str, str]], float]:
    body = (await http.get(f"{url}/api/v1/query", params={"query": promql})).json()
    assert body["status"] == "success", body
    return {
        frozenset((k, v) for k, v in result["metric"].items() if k not in ("instance", "__name__")): float(
            result["value"][1]
        )
        for result in body["data"]["result"]
    }


@pytest.mark.xdist_group("prometheus")
async def test_prometheus_scrapes_a_gateway_and_a_kit_service() -> None:
    app = create_app("catalog", configure_logging=False, access_log=False)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    sock = bound_socket()
    service_port = sock.getsockname()[1]
    async with serve_app(app, sock):
        config = validate_config(
            {
                "name": "shop-gateway",
                "listen": {"port": 0},
                "admin": {"port": 0},
                "access_log": {"enabled": False},
                "services": {"catalog": {"instances": [f"http://127.0.0.1:{service_port}"]}},
                "routes": [
                    {
                        "id": "items",
                        "match": {"path": "/api/**"},
                        "proxy": {"service": "catalog", "strip_prefix": "/api"},
                    }
                ],
            }
        )
        server = GatewayServer(config)
        await server.start()
        try:
            async with httpx.AsyncClient() as http:
                for i in range(3):
                    assert (
                        await http.get(f"http://127.0.0.1:{server.port}/api/items/{i}")
                    ).status_code == 200
                assert (await http.get(f"http://127.0.0.1:{server.port}/nowhere")).status_code == 404
                scrape: list[dict[str, Any]] = [
                    {
                        "job_name": "shop-gateway",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.admin_port}"]}],
                        "authorization": {"type": "Bearer", "credentials": server.admin_token},
                    },
                    {"job_name": "catalog", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]},
                ]
                async with prometheus(scrape) as url:
                    expected = {
                        frozenset(
                            {
                                ("job", "shop-gateway"),
                                ("method", "GET"),
                                ("route", "items"),
                                ("status", "200"),
                            }
                        ): 3.0,
                        frozenset(
                            {
                                ("job", "shop-gateway"),
                                ("method", "GET"),
                                ("route", "<unmatched>"),
                                ("status", "404"),
                            }
                        ): 1.0,
                        frozenset(
                            {
                                ("job", "catalog"),
                                ("method", "GET"),
                                ("route", "/items/{item_id}"),
                                ("status", "200"),
                            }
                        ): 3.0,
                    }
                    requests: dict[frozenset[tuple[str, str]], float] = {}
                    for _ in range(100):
                        requests = await _query(http, url, 'http_server_requests_total{route!="/metrics"}')
                        if requests == expected:
                            break
                        await asyncio.sleep(0.1)
                    assert requests == expected
                    calls = await _query(http, url, "edgeway_gateway_upstream_calls_total")
                    assert calls == {
                        frozenset({("job", "shop-gateway"), ("service", "catalog"), ("outcome", "2xx")}): 3.0
                    }
                    up = await _query(http, url, "up")
                    assert up == {
                        frozenset({("job", "shop-gateway")}): 1.0,
                        frozenset({("job", "catalog")}): 1.0,
                    }
                    # a dashboard query, as the gateway dashboard's latency panel asks it
                    p99 = await _query(
                        http,
                        url,
                        "histogram_quantile(0.99, sum by (job, le) "
                        '(http_server_request_duration_seconds_bucket{route="items"}))',
                    )
                    assert set(p99) == {frozenset({("job", "shop-gateway")})}
                    assert 0 < next(iter(p99.values())) <= 10
        finally:
            await server.shutdown()
