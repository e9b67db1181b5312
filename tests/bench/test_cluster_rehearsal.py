"""The multi-node rehearsal's pieces that can be checked without running it (``bench cluster``
needs root and minutes): the figures from recorded events, the NATS and gateway configs it
renders, the processes it keeps up, and the cleanup of what it creates."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bench import cluster_net
from bench.cli import app
from bench.cluster_load import BUDGET_SPENT, MAX_ATTEMPTS, Shopper
from bench.cluster_nats import nats_config
from bench.cluster_net import Network, Node, NotPermitted, Teardown, stale_names
from bench.cluster_nodes import PLACEMENT, Keeper, NodeProcess, Topology, gateway_config
from bench.cluster_score import (
    Delivery,
    Facts,
    Fault,
    Op,
    consumer_deliveries,
    duplicate_effects,
    error_rate,
    lost_events,
    recovery,
)
from edgeway.bus.embedded import find_nats_server
from edgeway.gateway.config.schema import GatewayConfig

NATS_URL = "nats://10.77.0.1:4222,nats://10.77.0.2:4222,nats://10.77.0.3:4222"


# --------------------------------------------------------------------------- rendered configs


def test_each_nats_node_routes_to_the_other_two_and_nats_server_accepts_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "n1.conf"
    conf.write_text(nats_config("n1", "10.77.0.1", ["10.77.0.2", "10.77.0.3"], tmp_path / "js"))
    text = conf.read_text()

    assert 'server_name: "n1"' in text
    assert 'listen: "10.77.0.1:4222"' in text
    assert '"nats-route://10.77.0.2:6222"' in text
    assert '"nats-route://10.77.0.3:6222"' in text
    assert "nats-route://10.77.0.1" not in text
    assert f'store_dir: "{tmp_path / "js"}"' in text
    done = subprocess.run([find_nats_server(), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ValueError, match="its own address"):
        nats_config("n1", "10.77.0.1", ["10.77.0.1", "10.77.0.2"], tmp_path)


def test_the_gateway_serves_the_web_bffs_routes_and_finds_services_on_every_nats_node() -> None:
    config = gateway_config("rehearsal-n1", "10.77.0.1", NATS_URL, "http://10.77.0.3:8400")
    parsed = GatewayConfig.model_validate(config)

    assert [r.id for r in parsed.routes] == ["login", "products", "place-order", "orders"]
    assert (parsed.listen.host, parsed.listen.port) == ("10.77.0.1", 8080)
    for service in ("catalog", "orders", "inventory"):
        assert config["services"][service]["discovery"]["nats_kv"]["url"] == NATS_URL
        assert config["services"][service]["health_check"]["path"] == "/health/ready"
    assert config["services"]["security"] == {"instances": ["http://10.77.0.3:8400"]}
    assert config["auth"]["jwks_url"] == "http://10.77.0.3:8400/.well-known/jwks.json"
    assert "bus" not in config["auth"]["revocations"]


def test_every_service_runs_on_two_nodes_with_the_clusters_settings(tmp_path: Path) -> None:
    network = Network("10.77.0.0/24", tag="ewc1")
    topo = Topology(network, tmp_path, "ewc1", PLACEMENT)

    for service in ("catalog", "orders", "inventory", "payments", "notifications"):
        assert len([p for p in topo.services if p.name == service]) == 2, service
    orders = next(p for p in topo.services if p.name == "orders" and p.node.name == "n2")
    assert orders.env["EDGEWAY_NATS_URL"] == NATS_URL
    assert orders.env["EDGEWAY_BUS_REPLICAS"] == "3"
    assert orders.env["EDGEWAY_INSTANCE_ID"] == "orders-n2"
    assert orders.env["EDGEWAY_ADVERTISE_URL"] == "http://10.77.0.2:8104"
    assert orders.env["EDGEWAY_DATABASE_URL"] == "postgresql+asyncpg://postgres@10.77.0.254:5432/ewc1_orders"
    assert orders.env["EDGEWAY_SECURITY_URL"] == "http://10.77.0.3:8400"
    assert orders.argv[-2:] == ["-m", "edgeway.demo.shop.orders"]
    assert orders.node.exec_argv(["x"]) == ["ip", "netns", "exec", "ewc1-n2", "x"]
    assert topo.security is not None
    assert "EDGEWAY_SECURITY_BUS_URL" not in topo.security.env
    assert topo.gateway_urls == ["http://10.77.0.1:8080", "http://10.77.0.2:8080"]
    assert (tmp_path / "n3" / "nats.conf").read_text().count("nats-route://") == 2


# --------------------------------------------------------------------------- the figures


def _facts(**changes: object) -> Facts:
    facts = Facts(
        orders=[("o1", "confirmed", "k1"), ("o2", "confirmed", "k2")],
        published=[
            ("e1", "o1", "pending", 1.0),
            ("e2", "o1", "confirmed", 2.0),
            ("e3", "o2", "confirmed", 3.0),
        ],
        stock={"CUP-01": (97, 0)},
        initial_stock={"CUP-01": 100},
        reservations=[("o1", "committed", [("CUP-01", 1)]), ("o2", "committed", [("CUP-01", 2)])],
        payments=[("o1", "captured"), ("o2", "captured")],
        consumed={"notifications": {"e1": 1.1, "e2": 2.1, "e3": 3.1}},
        emails=["order-o1-confirmed", "order-o2-confirmed"],
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def _probe(ids: Sequence[str]) -> list[Delivery]:
    return [Delivery("probe", i, "o1", "pending", 1.0) for i in ids]


def test_an_event_one_consumer_never_got_is_lost_and_a_redelivery_is_not() -> None:
    facts = _facts(consumed={"notifications": {"e1": 1.0, "e3": 3.0}})
    deliveries = _probe(["e1", "e2", "e3", "e3"]) + consumer_deliveries(facts)
    result = lost_events(facts, deliveries, ["probe", "notifications"])

    assert result["lost"] == 1
    assert result["lost_ids"] == ["e2"]
    assert result["missing_by_consumer"] == {"probe": 0, "notifications": 1}
    assert result["received_twice_by_consumer"] == {"probe": 1, "notifications": 0}
    # A consumer that got nothing at all lost everything.
    assert lost_events(facts, [], ["probe"])["lost"] == 3


def test_a_clean_run_has_no_duplicate_effects() -> None:
    assert duplicate_effects(_facts(), [])["total"] == 0


def test_each_kind_of_effect_applied_twice_is_counted() -> None:
    facts = _facts(
        orders=[("o1", "confirmed", "k1"), ("o2", "confirmed", "k2"), ("o3", "confirmed", "k1")],
        payments=[("o1", "captured"), ("o1", "captured"), ("o2", "captured")],
        stock={"CUP-01": (95, 1)},  # two units left beyond the commits, one reserved for nobody
        emails=["order-o1-confirmed", "order-o1-confirmed", "order-o2-confirmed"],
    )
    twice = Op("checkout", 0, 1, True, order_id="o1", key="k1", order_ids=("o1", "o3"))
    effects = duplicate_effects(facts, [twice])

    assert effects == {
        "orders_twice": 1,
        "client_saw_two_orders": 1,
        "charged_twice": 1,
        "stock_units_moved_twice": 3,
        "emails_twice": 1,
        "total": 7,
    }


def test_the_error_rate_counts_operations_from_a_faults_start_to_five_seconds_after_its_end() -> None:
    faults = [Fault("nats-kill", 10.0, 16.0)]
    ops = [
        Op("read", 5.0, 5.1, False),  # before: not during the fault
        Op("read", 11.0, 11.2, False),
        Op("read", 12.0, 12.1, True, attempts=2),
        Op("checkout", 20.9, 21.0, True),
        Op("checkout", 21.5, 21.6, False),  # 5.5 s after the end: outside
    ]
    result = error_rate(ops, faults)

    assert (result["during_faults"], result["failed_during_faults"]) == (3, 1)
    assert result["rate"] == pytest.approx(1 / 3, abs=1e-5)
    assert result["retried_during_faults"] == 1
    assert result["rate_all"] == pytest.approx(3 / 5)
    # A node that took 10 s to come back is missing until then: its failures count.
    slow = error_rate(ops, [Fault("node-kill", 10.0, 16.0, back_s=10.0)])
    assert (slow["during_faults"], slow["failed_during_faults"]) == (4, 2)


def test_the_error_rate_also_reports_how_many_attempts_failed_before_the_retries() -> None:
    faults = [Fault("partition", 10.0, 16.0)]
    ops = [
        Op("read", 11.0, 11.5, True, attempts=2, trail=("gw1 timeout (ConnectTimeout) 1.00", "gw2 200 0.02")),
        Op("checkout", 12.0, 12.1, True, trail=("gw2 201 0.05",)),
        Op("read", 13.0, 14.0, False, attempts=2, trail=("gw1 status 503 0.01", "gw2 status 502 0.01")),
    ]
    result = error_rate(ops, faults)

    assert result["rate"] == pytest.approx(1 / 3, abs=1e-5)
    assert result["attempts_during_faults"] == 5
    assert result["attempt_failure_rate"] == pytest.approx(3 / 5)


async def test_the_client_retries_within_its_attempts_and_its_budget_and_reports_the_rest_as_failed() -> None:
    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    shopper = Shopper(["http://gw1", "http://gw2"], time.monotonic)
    await shopper.close()
    shopper._http = httpx.AsyncClient(transport=httpx.MockTransport(unavailable))
    try:
        few = await asyncio.gather(*(shopper.read() for _ in range(5)))
        many = await asyncio.gather(*(shopper.read() for _ in range(60)))
    finally:
        await shopper.close()

    ops = few + many
    assert not any(op.ok for op in ops)
    # A few failing operations: each tries its three times, no more.
    assert [op.attempts for op in few] == [MAX_ATTEMPTS] * 5
    # Many: retries add at most 20 % of the requests plus one a second over the 10 s window,
    # 13 + 10 here, where retrying for 20 s each (as before) made more than 65 x 2.
    assert 0 < shopper.retries <= 0.2 * 65 + 10
    assert sum(op.attempts for op in ops) == 65 + shopper.retries
    spent = [op for op in ops if op.error.endswith(BUDGET_SPENT)]
    assert len(spent) == shopper.budget.exhausted > 0
    assert shopper.retry_report()["retries_refused_by_budget"] == len(spent)


def _finals(order_id: str, at: float, status: str = "confirmed") -> list[Delivery]:
    return [Delivery(c, f"{order_id}-{c}", order_id, status, at) for c in ("probe", "notifications")]


def test_recovery_runs_to_the_last_abnormal_request_or_event_after_the_fault() -> None:
    consumers = ["probe", "notifications"]
    faults = [Fault("nats-kill", 10.0, 16.0), Fault("partition", 30.0, 36.0)]
    ops = [Op("checkout", t, t + 0.2, True, order_id=f"b{t}") for t in (1.0, 2.0, 3.0)]
    deliveries = [d for t in (1.0, 2.0, 3.0) for d in _finals(f"b{t}", t + 0.5)]
    ops += [
        Op("read", 15.0, 17.2, False, error="timeout"),  # failed: until 17.2
        Op("read", 16.5, 16.6, True, attempts=2),  # retried but quick: normal
        Op("checkout", 17.0, 17.3, True, order_id="late"),
    ]
    deliveries += _finals("late", 19.5)  # 2.2 s after its 202: beyond the 2 s floor
    ops.append(Op("checkout", 31.0, 31.2, True, order_id="lost"))  # never final

    per_fault, details = recovery(ops, deliveries, consumers, faults)

    assert per_fault["per_fault"] == {"nats-kill": 3.5, "partition": None}
    assert per_fault["max"] is None
    nats = details["faults"]["nats-kill"]
    assert (nats["requests_s"], nats["events_s"], nats["retried_until_s"]) == (1.2, 3.5, 0.6)
    assert details["faults"]["partition"]["events_s"] is None
    assert details["thresholds"]["event_s"] == 2.0


def test_an_order_cancelled_during_a_fault_is_abnormal_even_when_it_was_quick() -> None:
    faults = [Fault("node-kill", 10.0, 12.0)]
    ops = [Op("checkout", 11.0, 11.1, True, order_id="c")]
    per_fault, details = recovery(ops, _finals("c", 13.0, "cancelled"), ["probe", "notifications"], faults)

    assert per_fault["per_fault"] == {"node-kill": 1.0}
    assert details["faults"]["node-kill"]["why"] == {"order cancelled": 1}


# --------------------------------------------------------------------------- cleanup and keeping up


def test_teardown_undoes_in_reverse_once_and_goes_on_past_a_failing_step() -> None:
    done: list[str] = []
    teardown = Teardown()
    teardown.push("first", lambda: done.append("first"))
    teardown.push("broken", lambda: 1 / 0)
    teardown.push("last", lambda: done.append("last"))

    teardown.run()
    teardown.run()

    assert done == ["last", "first"]
    assert len(teardown.errors) == 1
    assert teardown.errors[0].startswith("broken:")


def test_sigterm_unwinds_through_finally_so_the_teardown_runs() -> None:
    done: list[str] = []
    teardown = Teardown()
    teardown.push("step", lambda: done.append("undone"))
    teardown.install()
    code: object = None
    try:
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            teardown.run()
    except SystemExit as exc:
        code = exc.code
    finally:
        teardown.uninstall()
    assert code == 128 + signal.SIGTERM
    assert done == ["undone"]
    assert signal.getsignal(signal.SIGTERM) is not cluster_net._exit_on_signal


def test_only_the_names_of_finished_runs_are_stale() -> None:
    names = ["ewc100-n1", "ewc100br", "ewc100v3", "ewc200-n1", "eth0", "ewc100-probe", "ewcx-n1"]
    assert stale_names(names, alive=lambda pid: pid == 200) == ["ewc100-n1", "ewc100br", "ewc100v3"]


def test_it_refuses_without_root_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotPermitted, match="needs root"):
        cluster_net.preflight()
    result = CliRunner().invoke(app, ["cluster"])
    assert result.exit_code == 2
    assert "needs root" in result.output


def test_interface_names_fit_linux_even_for_the_largest_pid() -> None:
    network = Network("10.77.0.0/24", tag="ewc4194304")
    assert network.bridge == "ewc4194304br"
    assert [n.ip for n in network.nodes] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    assert network.root_ip == "10.77.0.254"
    assert max(len(n.veth) for n in network.nodes) <= 15


@dataclass(frozen=True, slots=True)
class _Here(Node):
    """A node that is this machine's own namespace: the processes run as they are."""

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


async def test_the_keeper_starts_a_crashed_process_again_and_leaves_a_killed_one_down(tmp_path: Path) -> None:
    node = _Here("n1", "-", "127.0.0.1", "-")
    crash = NodeProcess(
        "crash", node, [sys.executable, "-c", "raise SystemExit(3)"], {}, "http://-", tmp_path
    )
    keeper = Keeper([crash], clock=lambda: 0.0)
    keeping = asyncio.create_task(keeper.run())
    try:
        crash.start()
        for _ in range(100):
            if crash.starts >= 2:
                break
            await asyncio.sleep(0.05)
        assert crash.starts >= 2
        assert keeper.restarts[0]["code"] == 3
        assert keeper.restarts[0]["restart_in_s"] == 0.5
        crash.kill()
        starts = crash.starts
        await asyncio.sleep(1.2)
        assert crash.starts == starts
    finally:
        keeping.cancel()
        crash.kill()


def _netns_usable() -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    try:
        cluster_net.preflight()
    except NotPermitted:
        return False
    return True


@pytest.mark.skipif(not _netns_usable(), reason="needs root and ip netns")
def test_the_teardown_removes_the_namespaces_their_processes_and_the_bridge() -> None:
    tag = f"ewc{os.getpid()}"
    network = Network(f"10.{78 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 250}.0/24", nodes=2, tag=tag)
    teardown = Teardown()
    try:
        network.up(teardown)
        node = network.nodes[0]
        sleeper = subprocess.Popen(node.exec_argv(["sleep", "60"]))
        assert node.ns in cluster_net.ip("netns", "list")
        # `ip netns exec` enters the namespace after the fork: give it a moment on a busy machine.
        deadline = time.monotonic() + 5
        while str(sleeper.pid) not in cluster_net.ip("netns", "pids", node.ns).split():
            assert time.monotonic() < deadline, "the process never showed in its namespace"
            time.sleep(0.05)
    finally:
        teardown.run()
    assert sleeper.wait(5) == -signal.SIGKILL
    assert tag not in cluster_net.ip("netns", "list")
    assert f"{tag}br" not in cluster_net.ip("-o", "link", "show")
    assert not teardown.errors


async def test_the_client_sends_no_new_attempts_to_a_gateway_it_could_not_reach_for_a_while() -> None:
    def gw1_down(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gw1":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=[])

    shopper = Shopper(["http://gw1", "http://gw2"], time.monotonic)
    await shopper.close()
    shopper._http = httpx.AsyncClient(transport=httpx.MockTransport(gw1_down))
    try:
        ops = [await shopper.read() for _ in range(10)]
        shopper._down_until.clear()  # the ejection ends: gw1 gets its turn again
        again = await shopper.read()
        then = await shopper.read()
    finally:
        await shopper.close()

    assert all(op.ok for op in ops)
    # The first turn on gw1 failed and was retried on gw2; after that, gw2 alone.
    assert sum(op.attempts for op in ops) == 11
    assert [entry.split()[0] for op in ops for entry in op.trail].count("gw1") == 1
    # Once the ejection ended, one turn tried gw1 again (ejected once more), the other gw2.
    assert (again.attempts, then.attempts) in {(2, 1), (1, 2)}
    assert shopper.ejections == 2
