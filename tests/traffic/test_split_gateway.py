"""Weighted splits and canary rules through a real gateway: shares measured over real requests,
canaries by header, cookie and query, weights changed at run time, and each side's outcomes."""

from __future__ import annotations

import random

import pytest
from traffic_helpers import Client, Shadow, answers, instances, running, servers, traffic, within

from conftest import dead_port
from edgeway.gateway.traffic.split import SplitWeightsError
from edgeway.gateway.traffic.state import running_traffic


def split_route(**proxy: object) -> dict[str, object]:
    return {
        "id": "shop",
        "match": {"path": "/**"},
        "proxy": {"split": [{"service": "v1", "weight": 10}, {"service": "v2", "weight": 90}], **proxy},
    }


async def test_a_10_90_split_sends_each_side_its_share() -> None:
    v1, v2 = Shadow("v1"), Shadow("v2")
    async with servers(v1, v2):
        cfg = {"services": {"v1": instances(v1), "v2": instances(v2)}, "routes": [split_route()]}
        async with running(cfg) as (port, gw):
            traffic(gw).split("shop").rng = random.Random(20)  # a fixed sequence: the test cannot flake
            client = await Client.connect(port)
            got = await answers(client, 2000)
            await client.close()
    assert sum(got.values()) == 2000
    assert within(got["v1"], 2000, 0.10), got
    assert within(got["v2"], 2000, 0.90), got
    # What the backends saw agrees with what the client was answered.
    assert (len(v1.seen), len(v2.seen)) == (got["v1"], got["v2"])


async def test_canary_rules_match_headers_cookies_and_query_before_the_split() -> None:
    v1, v2, beta = Shadow("v1"), Shadow("v2"), Shadow("beta")
    canary = [
        {"service": "beta", "headers": {"X-Beta": "1"}},
        {"service": "beta", "cookies": {"beta": "1"}},
        {"service": "beta", "query": {"variant": "beta"}},
        {"service": "v1", "headers": {"X-Team": "core"}, "cookies": {"pin": "v1"}},  # both must hold
    ]
    async with servers(v1, v2, beta):
        services = {"v1": instances(v1), "v2": instances(v2), "beta": instances(beta)}
        cfg = {"services": services, "routes": [split_route(canary=canary)]}
        async with running(cfg) as (port, _):
            client = await Client.connect(port)

            async def who(path: str = "/x", **headers: str) -> str:
                response = await client.request("GET", path, headers={"Host": "gw", **headers})
                return response.headers["x-backend"]

            assert await who(**{"x-beta": "1"}) == "beta"  # header names without regard to case
            assert await who(**{"X-Beta": "2"}) != "beta"  # values exactly
            assert await who(Cookie="theme=dark; beta=1") == "beta"
            assert await who(Cookie='beta="1"') == "beta"  # a quoted cookie value
            assert await who(Cookie="beta=10") != "beta"
            assert await who("/x?a=1&variant=beta") == "beta"
            assert await who("/x?variant=beta%20") != "beta"  # decoded: "beta " is not "beta"
            assert await who("/x?variant=bet%61") == "beta"
            # The rule with two conditions needs both; the split decides otherwise (90 % v2).
            assert await who(**{"X-Team": "core", "Cookie": "pin=v1"}) == "v1"
            only_header = [await who(**{"X-Team": "core"}) for _ in range(30)]
            assert "v2" in only_header
            plain = await answers(client, 60)
            await client.close()
    assert "beta" not in plain  # no condition met: never the canary
    assert all(r.target.startswith("/x") for r in beta.seen)


async def test_a_canary_route_without_a_split_keeps_its_service_for_everyone_else() -> None:
    stable, beta = Shadow("stable"), Shadow("beta")
    async with servers(stable, beta):
        route = {
            "id": "acct",
            "match": {"path": "/account/**"},
            "proxy": {"service": "stable", "canary": [{"service": "beta", "headers": {"X-Beta": "1"}}]},
        }
        async with running(
            {"services": {"stable": instances(stable), "beta": instances(beta)}, "routes": [route]}
        ) as (
            port,
            gw,
        ):
            client = await Client.connect(port)
            assert await answers(client, 20, "/account/me") == {"stable": 20}
            assert await answers(client, 5, "/account/me", {"X-Beta": "1"}) == {"beta": 5}
            await client.close()
            described = traffic(gw).describe()["acct"]
    assert described["canary"] == ["beta"]
    assert described["outcomes"]["stable"]["requests"] == 20
    assert described["outcomes"]["beta"]["requests"] == 5


async def test_weights_change_at_run_time_for_the_next_request_and_are_checked() -> None:
    v1, v2 = Shadow("v1"), Shadow("v2")
    async with servers(v1, v2):
        cfg = {"services": {"v1": instances(v1), "v2": instances(v2)}, "routes": [split_route()]}
        async with running(cfg) as (port, gw):
            split = traffic(gw).split("shop")
            assert running_traffic(gw.env) is traffic(gw)
            assert split.weights == {"v1": 10.0, "v2": 90.0}
            client = await Client.connect(port)
            split.set_weights({"v1": 100, "v2": 0})
            assert await answers(client, 50) == {"v1": 50}
            split.set_weights({"v1": 0, "v2": 100})
            assert await answers(client, 50) == {"v2": 50}
            for bad, message in [
                ({"v1": 50, "v2": 40}, "sum to 100"),
                ({"v1": 50}, "no weight for v2"),
                ({"v1": 50, "v2": 50, "v3": 0}, "unknown service"),
                ({"v1": 150, "v2": -50}, "0 to 100"),
            ]:
                with pytest.raises(SplitWeightsError, match=message):
                    split.set_weights(bad)
            assert split.weights == {"v1": 0.0, "v2": 100.0}  # a refused change changed nothing
            split.reset()
            assert split.weights == {"v1": 10.0, "v2": 90.0}
            with pytest.raises(KeyError, match="has no split"):
                traffic(gw).split("nope")
            await client.close()


async def test_each_side_counts_its_requests_errors_and_latency() -> None:
    good, bad = Shadow("good"), Shadow("bad", status=503)
    async with servers(good, bad):
        route = {
            "id": "mig",
            "match": {"path": "/**"},
            "proxy": {"split": [{"service": "good", "weight": 50}, {"service": "bad", "weight": 50}]},
        }
        async with running(
            {"services": {"good": instances(good), "bad": instances(bad)}, "routes": [route]}
        ) as (
            port,
            gw,
        ):
            split = traffic(gw).split("mig")
            before = split.outcomes()
            client = await Client.connect(port)
            got = await answers(client, 200)
            await client.close()
            window = {side: split.outcomes()[side] - before[side] for side in split.services}
            text = gw.env.metrics.exposition()[0].decode()
    assert window["good"].requests == got["good"]
    assert window["bad"].requests == got["bad"]
    assert (window["good"].errors, window["bad"].errors) == (0, got["bad"])
    assert window["bad"].error_rate == 1.0
    assert sum(window["good"].buckets) == got["good"]
    mean = window["good"].mean_latency
    assert mean is not None
    assert 0 < mean < 5
    p99 = window["good"].latency_quantile(0.99)
    assert p99 is not None
    assert mean <= p99
    assert (
        f'edgeway_traffic_requests_total{{outcome="error",route="mig",service="bad"}} {got["bad"]}.0' in text
    )
    assert (
        f'edgeway_traffic_requests_total{{outcome="ok",route="mig",service="good"}} {got["good"]}.0' in text
    )
    assert 'edgeway_traffic_weight_percent{route="mig",service="bad"} 50.0' in text
    assert "edgeway_traffic_request_duration_seconds_bucket" in text


async def test_a_failed_side_counts_the_status_its_failure_is_answered_with() -> None:
    up = Shadow("up")
    async with servers(up):
        services = {"up": instances(up), "down": {"instances": [f"http://127.0.0.1:{dead_port()}"]}}
        route = {
            "id": "r",
            "match": {"path": "/**"},
            "proxy": {"split": [{"service": "up", "weight": 0}, {"service": "down", "weight": 100}]},
        }
        async with running({"services": services, "routes": [route]}) as (port, gw):
            client = await Client.connect(port)
            got = await answers(client, 5)
            await client.close()
            outcomes = traffic(gw).split("r").outcomes()
    assert got == {"502": 5}
    assert (outcomes["down"].requests, outcomes["down"].errors) == (5, 5)
    assert outcomes["up"].requests == 0


async def test_a_gateway_without_traffic_routes_has_no_traffic_component() -> None:
    plain = Shadow("plain")
    async with servers(plain):
        route = {"match": {"path": "/**"}, "proxy": {"service": "plain"}}
        async with running({"services": {"plain": instances(plain)}, "routes": [route]}) as (port, gw):
            assert running_traffic(gw.env) is None
            assert type(gw.pipelines["root"].action).__name__ == "ProxyAction"  # the plain proxy
            client = await Client.connect(port)
            assert await answers(client, 3) == {"plain": 3}
            await client.close()
