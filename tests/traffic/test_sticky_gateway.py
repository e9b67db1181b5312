"""Sticky choices through a real gateway: a key (header, cookie, authenticated subject) keeps its
side of a split and its instance, an instance that leaves moves only its keys, and instance
weights shape the shares of round robin, least outstanding and consistent hashing."""

from __future__ import annotations

from collections import Counter
from typing import Any

from edge_helpers import auth_block, issuer_for, jwks_server
from traffic_helpers import Client, Shadow, answers, assignments, instances, running, servers, within

from edgeway.security.keys import KeyRing

USERS = [f"user-{i}" for i in range(100)]


def sticky_config(a: list[Shadow], b: list[Shadow], sticky: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "services": {"a": instances(*a), "b": instances(*b)},
        "routes": [
            {
                "id": "app",
                "match": {"path": "/**"},
                "proxy": {
                    "split": [{"service": "a", "weight": 50}, {"service": "b", "weight": 50}],
                    "sticky": sticky,
                },
                **route,
            }
        ],
    }


async def served(
    client: Client, headers_by_key: dict[str, dict[str, str]], rounds: int
) -> list[tuple[str, str]]:
    """``rounds`` requests per key, interleaved: (key, backend) for each."""
    out: list[tuple[str, str]] = []
    for _ in range(rounds):
        for key, headers in headers_by_key.items():
            response = await client.request("GET", "/x", headers={"Host": "gw", **headers})
            assert response.status == 200
            out.append((key, response.headers["x-backend"]))
    return out


def pool() -> tuple[list[Shadow], list[Shadow]]:
    return [Shadow("a1"), Shadow("a2"), Shadow("a3")], [Shadow("b1"), Shadow("b2")]


async def test_a_header_key_keeps_its_side_and_instance_over_1000_requests() -> None:
    a, b = pool()
    async with servers(*a, *b), running(sticky_config(a, b, {"header": "X-User"})) as (port, _):
        client = await Client.connect(port)
        seen = assignments(await served(client, {u: {"X-User": u} for u in USERS}, 10))
        # A request without the key is balanced as usual (both sides, any instance).
        keyless = await answers(client, 40)
        await client.close()
    violations = sum(len(backends) - 1 for backends in seen.values())
    assert violations == 0
    backends = Counter(next(iter(found)) for found in seen.values())
    # Both sides and every instance got keys: stickiness is not "everyone on one instance".
    assert set(backends) == {"a1", "a2", "a3", "b1", "b2"}
    assert within(backends["a1"] + backends["a2"] + backends["a3"], 100, 0.5)
    assert {n[0] for n in keyless} == {"a", "b"}


async def test_a_cookie_key_is_sticky_too() -> None:
    a, b = pool()
    async with servers(*a, *b), running(sticky_config(a, b, {"cookie": "session"})) as (port, _):
        client = await Client.connect(port)
        headers = {u: {"Cookie": f"theme=dark; session={u}"} for u in USERS}
        seen = assignments(await served(client, headers, 10))
        await client.close()
    assert sum(len(v) - 1 for v in seen.values()) == 0
    assert len({next(iter(v)) for v in seen.values()}) == 5


async def test_the_authenticated_subject_is_sticky() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    tokens = {f"sub-{i}": issuer.issue(f"sub-{i}").token for i in range(50)}
    a, b = pool()
    async with servers(*a, *b), jwks_server(ring) as jwks:
        cfg = sticky_config(a, b, {"subject": True}, auth={})
        cfg["auth"] = auth_block(jwks.url)
        async with running(cfg) as (port, _):
            client = await Client.connect(port)
            headers = {s: {"Authorization": f"Bearer {t}"} for s, t in tokens.items()}
            seen = assignments(await served(client, headers, 20))
            await client.close()
    assert sum(len(v) - 1 for v in seen.values()) == 0  # 1,000 requests, no violation
    assert len({next(iter(v)) for v in seen.values()}) >= 4


async def test_an_instance_that_leaves_moves_only_its_own_keys() -> None:
    a, b = pool()
    async with servers(*a, *b), running(sticky_config(a, b, {"header": "X-User"})) as (port, gw):
        client = await Client.connect(port)
        headers = {u: {"X-User": u} for u in USERS}
        before = {k: next(iter(v)) for k, v in assignments(await served(client, headers, 1)).items()}
        # a2 leaves the service (as discovery would report it).
        gw.clusters["a"].update([a[0].url, a[2].url])
        after = {k: next(iter(v)) for k, v in assignments(await served(client, headers, 2)).items()}
        # It comes back: its keys return to it.
        gw.clusters["a"].update([s.url for s in a])
        back = {k: next(iter(v)) for k, v in assignments(await served(client, headers, 1)).items()}
        await client.close()
    moved = {k for k in USERS if before[k] != after[k]}
    assert moved == {k for k in USERS if before[k] == "a2"}
    assert moved  # a2 had keys
    assert all(after[k] in ("a1", "a3") for k in moved)  # they stay on their side of the split
    assert back == before


async def test_an_unavailable_instance_hands_its_keys_to_the_next_best_one() -> None:
    a, b = pool()
    async with servers(*a, *b), running(sticky_config(a, b, {"header": "X-User"})) as (port, gw):
        client = await Client.connect(port)
        headers = {u: {"X-User": u} for u in USERS}
        before = {k: next(iter(v)) for k, v in assignments(await served(client, headers, 1)).items()}
        gw.clusters["b"].endpoints[0].available = False  # b1 ejected (breaker, outlier, health check)
        after = {k: next(iter(v)) for k, v in assignments(await served(client, headers, 1)).items()}
        await client.close()
    assert {k for k in USERS if before[k] != after[k]} == {k for k in USERS if before[k] == "b1"}
    assert {after[k] for k in USERS if before[k] == "b1"} == {"b2"}


async def test_weighted_round_robin_gives_exact_shares_and_interleaves() -> None:
    heavy, light = Shadow("heavy"), Shadow("light")
    async with servers(heavy, light):
        service = instances(heavy, light, weights={heavy.url: 3})
        route = {"match": {"path": "/**"}, "proxy": {"service": "s"}}
        async with running({"services": {"s": service}, "routes": [route]}) as (port, _):
            client = await Client.connect(port)
            order = [
                (await client.request("GET", "/x", headers={"Host": "gw"})).headers["x-backend"]
                for _ in range(8)
            ]
            got = await answers(client, 400)
            await client.close()
    assert got == {"heavy": 300, "light": 100}
    # Smooth: the light instance's turns are spread out, not after a burst of three heavy ones.
    assert order.count("light") == 2
    assert order.index("light") < 4


async def test_weighted_least_outstanding_and_sticky_hashing_follow_the_weights() -> None:
    heavy, light = Shadow("heavy"), Shadow("light")
    async with servers(heavy, light):
        lo = instances(heavy, light, balancer="least_outstanding", weights={heavy.url: 3})
        hashed = instances(heavy, light, weights={heavy.url: 3})
        routes = [
            {"id": "lo", "match": {"path": "/lo/**"}, "proxy": {"service": "lo"}},
            {
                "id": "hash",
                "match": {"path": "/hash/**"},
                "proxy": {"service": "hashed", "sticky": {"header": "X-K"}},
            },
        ]
        async with running({"services": {"lo": lo, "hashed": hashed}, "routes": routes}) as (port, _):
            client = await Client.connect(port)
            by_load = await answers(client, 400, "/lo/x")
            keys: Counter[str] = Counter()
            for i in range(400):
                response = await client.request("GET", "/hash/x", headers={"Host": "gw", "X-K": f"k{i}"})
                keys[response.headers["x-backend"]] += 1
            await client.close()
    # One request at a time: every instance idle, so the shares are the candidates' draw by weight.
    assert within(by_load["heavy"], 400, 0.75), by_load
    assert within(keys["heavy"], 400, 0.75), keys
