"""The system file: the shop's own, what `edgeway system check` says about good and bad files,
and the demo's plan following the file it is built from."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeway.demo.plan import DEFAULT_PORTS, SYSTEM_FILE, ShopPlan
from edgeway.gateway.core.errors import ConfigError
from edgeway.system import instance_names, load_system, process_ports
from edgeway.system.cli import app

runner = CliRunner()

MINIMAL = """\
system: tiny
services:
  security:
    kind: security
    module: edgeway.demo.shop.security
    port: 8400
  catalog:
    module: edgeway.demo.shop.catalog
    port: 8101
    instances: 2
    database: catalog
"""
EDGE = """\
edges:
  gw:
    config: gw.yaml
    pattern: gateway
    port: 8080
    admin_port: 8180
"""


def _check(path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["check", str(path), *args])
    return result.exit_code, result.output


def test_the_shop_is_one_system_file_and_the_demo_ports_are_its_ports() -> None:
    loaded = load_system(SYSTEM_FILE, env={})
    system = loaded.model
    # every port the demo names comes from the system file, but the control room's (the demo
    # process itself serves it)
    assert process_ports(system) == {n: p for n, p in DEFAULT_PORTS.items() if n != "control"}
    assert instance_names(system, "catalog") == ["catalog-1", "catalog-2"]
    assert DEFAULT_PORTS["catalog-2"] == system.services["catalog"].port + 1
    # every module the file names exists, every edge config is there
    for name, service in system.services.items():
        assert service.module is not None, name
        assert importlib.util.find_spec(service.module) is not None, name
    for name in system.edges:
        assert loaded.edge_config(name).is_file()


def test_check_accepts_the_shop_and_its_edge_configs() -> None:
    code, output = _check(SYSTEM_FILE)
    assert code == 0, output
    assert output == (f"ok: {SYSTEM_FILE} (9 services in 10 processes, 3 edges, broker NATS, pattern all)\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "    prot: 9\n", ":12:5: services.catalog.prot: unknown key 'prot' (did you mean 'port'?"),
        (
            MINIMAL.replace("instances: 2", "instances: two"),
            ":10:5: services.catalog.instances: Input should be a valid integer",
        ),
        (
            MINIMAL + "  orders:\n    module: edgeway.demo.shop.orders\n    port: 8102\n",
            ":14:5: services.orders.port: port 8102 of orders is already catalog-2's",
        ),
        (
            MINIMAL + "  orders:\n    module: edgeway.demo.shop.orders\n    port: 8200\n"
            "    after: [payments]\n",
            ":15:13: services.orders.after[0]: 'payments' is not a service of this system (nor `broker`)",
        ),
        (
            MINIMAL + "  web:\n    kind: plain\n    module: edgeway.demo.shop.web\n    port: 8090\n",
            ":12:3: services.web.health: a `plain` service needs `health",
        ),
        (MINIMAL + EDGE.replace("gw.yaml", "nope.yaml"), ":14:5: edges.gw.config: no such file:"),
        (MINIMAL.replace("system: tiny", "system: Tiny_Shop"), ":1:1: system: 'Tiny_Shop' is not a name"),
        (
            MINIMAL + "  orders:\n    module: x\n    command: [x]\n    port: 8200\n",
            ":12:3: services.orders: give exactly one of `module` (python -m MODULE) or `command`",
        ),
        (MINIMAL + "  orders: {module: [}\n", ":12:21: YAML syntax error"),
        (
            MINIMAL.replace("port: 8400", "port: ${NO_SUCH_PORT_VARIABLE}"),
            ":6:11: services.security.port: environment variable 'NO_SUCH_PORT_VARIABLE' is not set",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "port-clash",
        "after-unknown",
        "plain-without-health",
        "missing-edge-config",
        "bad-name",
        "module-and-command",
        "yaml-syntax",
        "unset-variable",
    ],
)
def test_check_names_file_line_column_and_key_and_exits_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "edgeway.system.yaml"
    path.write_text(text)
    code, output = _check(path)
    assert code == 2, output
    assert f"{path}{expected}" in output, output


def test_a_broken_edge_config_is_reported_in_its_own_file(tmp_path: Path) -> None:
    edge = tmp_path / "gw.yaml"
    edge.write_text("listen: {port: 8080}\nroutes:\n  - match: {path: /x}\n    proxy: {service: nowhere}\n")
    system = tmp_path / "edgeway.system.yaml"
    system.write_text(MINIMAL + EDGE)
    code, output = _check(system)
    assert code == 2
    assert f"{edge}:4:" in output, output
    assert "routes[0].proxy.service" in output
    # the system file itself is fine
    code, output = _check(system, "--no-edges")
    assert code == 0, output


def test_a_system_file_may_include_another(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text(MINIMAL.replace("system: tiny\n", "") + "    bogus: 1\n")
    path = tmp_path / "edgeway.system.yaml"
    path.write_text("include: [services.yaml]\nsystem: tiny\n")
    with pytest.raises(ConfigError) as caught:
        load_system(path)
    (issue,) = caught.value.issues
    where = (issue.file, issue.line, issue.key_path)
    assert where == (str(tmp_path / "services.yaml"), 11, "services.catalog.bogus")


def test_the_demo_plan_follows_its_system_file(tmp_path: Path) -> None:
    """Adding a service to the file is all it takes for the demo to start it and the edges to
    learn where it is: the plan has no list of its own."""
    shop = tmp_path / "shop"
    shutil.copytree(SYSTEM_FILE.parent / "edges", shop / "edges")
    text = SYSTEM_FILE.read_text().replace(
        "\nedges:\n",
        "  wishlist:\n    module: edgeway.demo.shop.profile\n    port: 8109\n"
        "    database: wishes\n\nedges:\n",
    )
    (shop / "edgeway.system.yaml").write_text(text)
    loaded = load_system(shop / "edgeway.system.yaml")
    plan = ShopPlan(tmp_path / "data", ports=process_ports(loaded.model), system_file=loaded)
    specs = {spec.name: spec for spec in plan.processes()}
    wishlist = specs["wishlist"]
    assert wishlist.after == ("nats", "security")
    assert wishlist.env["EDGEWAY_SERVICE_NAME"] == "wishlist"
    assert wishlist.env["EDGEWAY_PORT"] == "8109"
    assert wishlist.env["EDGEWAY_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'data'}/wishes.db"
    assert specs["gateway"].env["SHOP_URL_WISHLIST"] == "http://127.0.0.1:8109"
    assert "wishlist" in specs["gateway"].after
    assert specs["gateway"].argv[-1] == str(shop / "edges" / "gateway.yaml")


def test_another_system_is_planned_without_the_shops_extras(tmp_path: Path) -> None:
    """``edgeway demo --system``: the processes the file names, nothing of the shop's story; a
    service with a ``path`` runs from its project's ``src/``."""
    (tmp_path / "services" / "stock" / "src").mkdir(parents=True)
    (tmp_path / "gw.yaml").write_text("listen: {port: 8080}\nroutes: []\n")
    system = tmp_path / "edgeway.system.yaml"
    system.write_text(
        "system: market\nservices:\n  stock:\n    module: stock\n    path: services/stock\n"
        "    image: market/stock:0.1.0\n    port: 8001\n" + EDGE
    )
    loaded = load_system(system)
    plan = ShopPlan(tmp_path / "data", ports=process_ports(loaded.model), system_file=loaded)
    assert not plan.is_shop
    assert ShopPlan(tmp_path / "data").is_shop
    specs = {spec.name: spec for spec in plan.processes()}
    assert list(specs) == ["nats", "stock", "gw"]  # no strangler controller
    stock = specs["stock"]
    assert stock.argv[1:] == ("-m", "stock")
    assert stock.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "services" / "stock" / "src")
    assert "EDGEWAY_EMAIL_DELAY" not in stock.env
    assert stock.env["EDGEWAY_CORS_ORIGINS"] == "[]"
    assert stock.after == ("nats",)  # no security service to wait for
    assert specs["gw"].after == ("stock",)
    assert specs["gw"].env.get("SHOP_STRANGLER_FILE") == os.environ.get("SHOP_STRANGLER_FILE")
    assert specs["gw"].env["MARKET_URL_STOCK"] == "http://127.0.0.1:8001"


def test_a_service_path_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "edgeway.system.yaml"
    path.write_text(MINIMAL + "    path: services/cat\n")
    code, output = _check(path)
    assert code == 2
    assert f"{path}:12:5: services.catalog.path: no such folder: {tmp_path / 'services/cat'}" in output
