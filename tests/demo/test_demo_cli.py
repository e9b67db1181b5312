"""`edgeway demo`: what it refuses before starting anything, and its plan of processes.

Starting the whole system is covered by tests/shop (once per module); these tests stay cheap.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dead_port, held_ports
from edgeway.demo.flags import parse_flag_value
from edgeway.demo.plan import DEFAULT_PORTS, ShopPlan, parse_ports


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeway.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        # the sources under test (a worktree's, when PYTHONPATH says so), nothing else of ours
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )


def test_demo_refuses_ports_in_use_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        # Held with SO_REUSEADDR, so the demo's check (a bind with SO_REUSEADDR) finds them free.
        others = dict(zip(DEFAULT_PORTS, held_ports(len(DEFAULT_PORTS)), strict=True))
        ports = [f"{name}={p}" for name, p in others.items() if name != "orders"]
        args = [a for p in ports for a in ("--port", p)]
        result = _demo(*args, "--port", f"orders={busy}", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode != 0
    assert f"orders ({busy})" in result.stderr
    assert "already in use" in result.stderr
    # nothing was started: no NATS data, no databases
    assert not list((tmp_path / "d").glob("*.db"))
    assert not (tmp_path / "d" / "nats").exists()


def test_demo_rejects_a_malformed_port_option(tmp_path: Path) -> None:
    result = _demo("--port", "catalog=9000", cwd=tmp_path)
    assert result.returncode != 0
    assert "expected NAME=PORT with NAME one of" in result.stderr
    result = _demo("--port", "orders=http", cwd=tmp_path)
    assert "'http' is not a port number" in result.stderr


def test_demo_runs_the_system_file_given_or_here_and_refuses_a_broken_one(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("system: tiny\nservices:\n  stock: {module: stock, prot: 8001}\n")
    result = _demo("--system", str(broken), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{broken}:3:" in result.stderr
    assert "services.stock.prot: unknown key 'prot'" in result.stderr
    assert not (tmp_path / ".edgeway-demo").exists()  # nothing started, nothing made
    # ./edgeway.system.yaml when there is one: its processes are the ones --port names
    here = tmp_path / "edgeway.system.yaml"
    here.write_text("system: tiny\nservices:\n  stock: {module: x, port: 8001}\n")
    result = _demo("--port", "catalog=9000", cwd=tmp_path)
    assert result.returncode != 0
    assert "expected NAME=PORT with NAME one of nats, stock" in result.stderr


def test_demo_rejects_an_unknown_pattern(tmp_path: Path) -> None:
    result = _demo("--pattern", "mesh", cwd=tmp_path)
    assert result.returncode != 0
    assert "--pattern must be one of all, direct, gateway, bff" in result.stderr


def test_flag_command_says_where_it_could_not_reach_the_broker(tmp_path: Path) -> None:
    port = dead_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeway.cli",
            "demo",
            "flag",
            "payments.fail",
            "on",
            "--nats-port",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"cannot set the flag at nats://127.0.0.1:{port}" in result.stderr


def test_two_processes_may_not_share_a_port() -> None:
    with pytest.raises(ValueError, match=r"two processes would share a port \(8101: catalog-1, orders\)"):
        parse_ports(["orders=8101"])


@pytest.mark.parametrize(
    ("text", "value"),
    [("on", True), ("OFF", False), ("true", True), ('{"percentage": 25}', {"percentage": 25})],
)
def test_flag_values(text: str, value: object) -> None:
    assert parse_flag_value(text) == value


def test_flag_values_that_are_neither_switches_nor_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="not on/off or a JSON flag rule"):
        parse_flag_value("maybe")
    with pytest.raises(ValueError, match="a flag is on/off or a JSON object rule"):
        parse_flag_value("[1, 2]")


def test_each_pattern_starts_the_services_and_only_its_edges(tmp_path: Path) -> None:
    def names(pattern: str) -> set[str]:
        return {p.name for p in ShopPlan(tmp_path, pattern=pattern).processes()}  # type: ignore[arg-type]

    core = {"nats", "security", "catalog-1", "catalog-2", "inventory", "orders", "payments"}
    core |= {"notifications", "profile", "legacy", "web"}
    assert names("direct") == core
    assert names("gateway") == core | {"strangler", "gateway"}
    assert names("bff") == core | {"strangler", "web-bff", "mobile-bff"}
    assert names("all") == core | {"strangler", "gateway", "web-bff", "mobile-bff"}


def test_processes_start_after_what_they_need(tmp_path: Path) -> None:
    specs = {p.name: p for p in ShopPlan(tmp_path).processes()}
    assert specs["security"].after == ("nats",)
    assert specs["orders"].after == ("nats", "security")
    assert all(dep in specs for spec in specs.values() for dep in spec.after)
    assert specs["orders"].argv[1:] == ("-m", "edgeway.demo.shop.orders")
    assert specs["orders"].env["EDGEWAY_NATS_URL"] == "nats://127.0.0.1:14222"
    assert specs["gateway"].env["SHOP_PORT_CATALOG_2"] == "8102"
    # the edges start once the strangler controller has written the file they include
    assert specs["gateway"].after[:2] == ("security", "strangler")
    assert {"catalog-1", "catalog-2", "orders", "legacy"} <= set(specs["gateway"].after)
    assert specs["gateway"].env["SHOP_STRANGLER_FILE"] == str(tmp_path / "strangler.yaml")
    # the controller commands the edges' strangler through their admin APIs
    admins = specs["strangler"].env["SHOP_ADMIN_URLS"].split(",")
    assert admins == [ShopPlan(tmp_path).url(e + "-admin") for e in ("gateway", "web-bff", "mobile-bff")]
    assert specs["strangler"].env["SHOP_STRANGLER_STATE"] == str(tmp_path / "strangler-state.json")


def test_the_tls_plan_serves_https_and_wants_client_certificates_at_the_services(tmp_path: Path) -> None:
    from edgeway.demo.strangler import render
    from edgeway.demo.tls import demo_certificates
    from edgeway.gateway.config.loader import load_config

    plan = ShopPlan(tmp_path, tls=True)
    certs = demo_certificates(plan.certificates.directory)
    ca_made = certs.ca.read_bytes()
    assert demo_certificates(plan.certificates.directory).ca.read_bytes() == ca_made  # made once, kept
    certs.write_edge_overlay(plan.edge_services())
    specs = {p.name: p for p in plan.processes()}
    assert plan.url("gateway").startswith("https://")
    assert plan.url("catalog-1").startswith("https://")
    assert plan.url("gateway-admin").startswith("http://")  # the admin port stays local and plain
    # a kit service requires a client certificate from the CA; the token service and the app's
    # files are client-facing (browsers, partners) and only serve HTTPS
    assert specs["orders"].env["EDGEWAY_TLS_CLIENT_CERT_REQUIRED"] == "true"
    assert specs["orders"].env["EDGEWAY_ADVERTISE_URL"].startswith("https://")
    assert specs["legacy"].env["EDGEWAY_TLS_CLIENT_CA"] == str(certs.ca)
    for open_to_all in ("security", "web"):
        assert specs[open_to_all].env["EDGEWAY_TLS_CERT"] == str(certs.server_cert)
        assert "EDGEWAY_TLS_CLIENT_CA" not in specs[open_to_all].env
    # an edge config with the demo's environment: HTTPS on the listener, mTLS to every service
    plan.strangler_file.write_text(render(plan.strangler_state_file))
    edge = specs["gateway"]
    config = load_config(plan.system_file.edge_config("gateway"), edge.env)
    assert config.listen.tls is not None
    assert config.services["legacy"].instances[0].startswith("https://")
    assert config.strangler_store.path == str(plan.strangler_state_file)
    for name in ("catalog", "legacy", "security", "profile"):
        tls = config.services[name].tls
        assert tls is not None
        assert str(tls.ca) == str(certs.ca)
        assert str(tls.cert) == str(certs.client_cert)
    # without --tls nothing of this is there
    plain = {p.name: p for p in ShopPlan(tmp_path).processes()}
    assert plain["gateway"].env.get("SHOP_TLS_FILE") is None
    assert "EDGEWAY_TLS_CERT" not in plain["orders"].env
    assert load_config(plan.system_file.edge_config("gateway"), plain["gateway"].env).listen.tls is None
