"""How a split chooses a side, without sockets: random shares by weight, sticky keys by weighted
rendezvous hashing that only ever move towards a side that gained weight, and outcome windows."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from edgeway.gateway.actions.proxy import HeaderEdits, ProxyTarget
from edgeway.gateway.traffic.action import KEYED_CACHE, KeyedActions
from edgeway.gateway.traffic.config import SplitSide
from edgeway.gateway.traffic.split import BOUNDS, Outcomes, SideStats, Split
from edgeway.gateway.upstream.call import CallLimits
from edgeway.gateway.upstream.clusters import make_cluster
from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.http.limits import PoolLimits, UpstreamTimeouts
from edgeway.observability.metrics import LATENCY_BUCKETS
from edgeway.resilience.hashing import stable_hash

KEYS = [stable_hash(f"user-{i}".encode()) for i in range(5000)]


def split(*weights: float) -> Split:
    sides = [SplitSide(service=f"s{i}", weight=w) for i, w in enumerate(weights)]
    return Split("r", sides, rng=random.Random(11))


def test_random_choice_follows_the_weights_and_never_picks_a_side_at_zero() -> None:
    s = split(10, 0, 90)
    got = Counter(s.services[s.choose(None)] for _ in range(20000))
    assert got["s1"] == 0
    assert 0.09 < got["s0"] / 20000 < 0.11
    s.set_weights({"s0": 0, "s1": 0, "s2": 100})
    assert {s.services[s.choose(None)] for _ in range(1000)} == {"s2"}


def test_sticky_keys_follow_the_weights_and_a_key_always_gets_the_same_side() -> None:
    s = split(10, 90)
    first = [s.choose(k) for k in KEYS]
    assert first == [s.choose(k) for k in KEYS]
    assert 0.08 < first.count(0) / len(KEYS) < 0.12
    # The same in another process or generation: it depends on the key and the service names only.
    assert first == [split(10, 90).choose(k) for k in KEYS]


def moves(s: Split, before: tuple[float, ...], after: tuple[float, ...]) -> set[tuple[int, int]]:
    """The (from, to) sides keys move between when the weights go from ``before`` to ``after``."""
    s.set_weights(dict(zip(s.services, before, strict=True)))
    first = [s.choose(k) for k in KEYS]
    s.set_weights(dict(zip(s.services, after, strict=True)))
    return {(a, b) for a, b in zip(first, [s.choose(k) for k in KEYS], strict=True) if a != b}


def test_a_rollout_step_moves_keys_only_to_the_side_that_grew_and_a_rollback_only_away() -> None:
    two = split(99, 1)
    for old, new in [(1, 10), (10, 50), (50, 100)]:
        assert moves(two, (100 - old, old), (100 - new, new)) == {(0, 1)}
    assert moves(two, (50, 50), (90, 10)) == {(1, 0)}
    # More sides: one side's weight changes while the others keep their proportions (1:9 here).
    three = split(1, 9.9, 89.1)
    steps = [(1, 9.9, 89.1), (10, 9, 81), (50, 5, 45), (100, 0, 0)]
    for before, after in itertools.pairwise(steps):
        assert moves(three, before, after) <= {(1, 0), (2, 0)}
    assert moves(three, (50, 5, 45), (10, 9, 81)) <= {(0, 1), (0, 2)}
    assert [three.choose(k) for k in KEYS[:50]] != [0] * 50


def test_outcome_snapshots_subtract_into_a_window() -> None:
    stats = SideStats()
    for status, seconds in [(200, 0.004), (503, 0.2), (200, 0.004), (200, 30.0)]:
        stats.record(status, seconds)
    whole = stats.snapshot()
    assert (whole.requests, whole.errors) == (4, 1)
    assert whole.latency_quantile(0.5) == 0.005
    assert whole.latency_quantile(1.0) == float("inf")
    stats.record(200, 0.001)
    window = stats.snapshot() - whole
    assert (window.requests, window.errors, window.error_rate) == (1, 0, 0.0)
    assert window.latency_quantile(0.99) == 0.001
    assert Outcomes().error_rate is None
    assert Outcomes().latency_quantile(0.5) is None
    assert tuple(LATENCY_BUCKETS) == BOUNDS  # the metrics' buckets, without importing them at start


async def test_a_sticky_keys_proxy_action_is_kept_until_the_instances_change() -> None:
    cluster = make_cluster(
        "svc",
        ["http://127.0.0.1:9001", "http://127.0.0.1:9002"],
        "round_robin",
        UpstreamTimeouts(1, 1, 1),
        PoolLimits(),
    )
    target = ProxyTarget(
        cluster, None, HeaderEdits(), HeaderEdits(), False, 1.0, Forwarding([]), CallLimits(1, 1, 1, 0)
    )
    keyed = KeyedActions(target)
    first = keyed.action(KEYS[0])
    assert keyed.action(KEYS[0]) is first
    assert first.target.cluster.pick() is cluster.keyed(KEYS[0]).pick()  # the key's instance
    assert first.target.request_headers is target.request_headers  # the rest of the target as is
    cluster.update(["http://127.0.0.1:9002"])  # discovery: the instances changed
    again = keyed.action(KEYS[0])
    assert again is not first
    assert again.target.cluster.endpoints is cluster.endpoints
    for key in KEYS[: KEYED_CACHE + 1]:
        keyed.action(key)
    assert len(keyed._actions) == KEYED_CACHE  # bounded: the oldest went
    assert KEYS[0] not in keyed._actions
    cluster.close()
