from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from edgeway.resilience.balancer import (
    LeastOutstanding,
    NoInstanceAvailable,
    Rendezvous,
    RoundRobin,
    WeightedLeastOutstanding,
    WeightedRoundRobin,
    make_balancer,
)
from edgeway.resilience.hashing import stable_hash


@dataclass(eq=False)
class Inst:
    name: str
    outstanding: int = 0
    available: bool = True


def test_round_robin_cycles_and_skips_unavailable() -> None:
    a, b, c = Inst("a"), Inst("b"), Inst("c")
    rr: RoundRobin[Inst] = RoundRobin()
    assert [rr.pick([a, b, c]).name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    b.available = False
    assert {rr.pick([a, b, c]).name for _ in range(10)} == {"a", "c"}


def test_no_available_instance_raises() -> None:
    insts = [Inst("a", available=False)]
    with pytest.raises(NoInstanceAvailable):
        RoundRobin[Inst]().pick(insts)
    with pytest.raises(NoInstanceAvailable):
        LeastOutstanding[Inst]().pick(insts)


def test_least_outstanding_prefers_the_less_loaded_of_two_choices() -> None:
    busy, idle = Inst("busy", outstanding=10), Inst("idle", outstanding=0)
    lo: LeastOutstanding[Inst] = LeastOutstanding(random.Random(1))
    assert all(lo.pick([busy, idle]).name == "idle" for _ in range(50))


def test_least_outstanding_spreads_load_when_requests_stay_in_flight() -> None:
    insts = [Inst(str(i)) for i in range(4)]
    lo: LeastOutstanding[Inst] = LeastOutstanding(random.Random(7))
    for _ in range(400):
        lo.pick(insts).outstanding += 1
    counts = Counter({i.name: i.outstanding for i in insts})
    assert max(counts.values()) - min(counts.values()) <= 10


def test_least_outstanding_ignores_unavailable() -> None:
    a, b, c = Inst("a"), Inst("b", available=False), Inst("c")
    lo: LeastOutstanding[Inst] = LeastOutstanding(random.Random(3))
    assert {lo.pick([a, b, c]).name for _ in range(50)} == {"a", "c"}


def test_make_balancer_rejects_unknown_kind() -> None:
    assert isinstance(make_balancer("round_robin"), RoundRobin)
    with pytest.raises(ValueError, match="unknown balancer"):
        make_balancer("random")


def test_excluded_instances_are_skipped_without_disturbing_the_rotation() -> None:
    a, b, c = Inst("a"), Inst("b"), Inst("c")
    rr: RoundRobin[Inst] = RoundRobin()
    assert rr.pick([a, b, c]).name == "a"
    assert rr.pick([a, b, c], exclude=[b]).name == "c"
    assert [rr.pick([a, b, c]).name for _ in range(3)] == ["a", "b", "c"]
    lo: LeastOutstanding[Inst] = LeastOutstanding(random.Random(2))
    assert {lo.pick([a, b, c], exclude=[a, c]).name for _ in range(10)} == {"b"}
    with pytest.raises(NoInstanceAvailable):
        lo.pick([a, b], exclude=[a, b])
    with pytest.raises(NoInstanceAvailable):
        rr.pick([a, b], exclude=[a, b])


@dataclass(eq=False)
class Node:
    name: str
    weight: int = 1
    outstanding: int = 0
    available: bool = True
    current_weight: int = 0
    hash_id: int = 0

    def __post_init__(self) -> None:
        self.hash_id = stable_hash(self.name.encode())


def test_make_balancer_picks_a_weighted_one_only_when_weights_are_configured() -> None:
    assert type(make_balancer("round_robin", weighted=True)) is WeightedRoundRobin
    assert type(make_balancer("least_outstanding", weighted=True)) is WeightedLeastOutstanding
    assert type(make_balancer("least_outstanding")) is LeastOutstanding


def test_weighted_round_robin_is_exact_per_cycle_and_smooth() -> None:
    a, b, c = Node("a", 5), Node("b", 1), Node("c", 1)
    wrr: WeightedRoundRobin[Node] = WeightedRoundRobin()
    cycle = [wrr.pick([a, b, c]).name for _ in range(7)]
    assert cycle == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth order, not a burst of five
    assert Counter(wrr.pick([a, b, c]).name for _ in range(700)) == {"a": 500, "b": 100, "c": 100}
    b.available = False
    assert Counter(wrr.pick([a, b, c], exclude=[c]).name for _ in range(10)) == {"a": 10}
    with pytest.raises(NoInstanceAvailable):
        wrr.pick([a, b, c], exclude=[a, c])


def test_weighted_least_outstanding_draws_candidates_by_weight_and_prefers_the_idle() -> None:
    heavy, light = Node("heavy", 4), Node("light", 1)
    wlo: WeightedLeastOutstanding[Node] = WeightedLeastOutstanding(random.Random(4))
    shares = Counter(wlo.pick([heavy, light]).name for _ in range(5000))
    assert 0.75 < shares["heavy"] / 5000 < 0.85  # 0.8 expected
    heavy.outstanding = 10
    assert Counter(wlo.pick([heavy, light]).name for _ in range(200))["light"] > 60
    assert wlo.pick([heavy, light], exclude=[light]) is heavy
    with pytest.raises(NoInstanceAvailable):
        wlo.pick([heavy], exclude=[heavy])


def test_rendezvous_keeps_a_key_on_its_instance_and_moves_only_the_keys_of_one_that_leaves() -> None:
    nodes = [Node(f"10.0.0.{i}:80") for i in range(5)]
    keys = [stable_hash(f"user-{i}".encode()) for i in range(2000)]
    before = {k: Rendezvous[Node](k).pick(nodes) for k in keys}
    assert before == {k: Rendezvous[Node](k).pick(list(reversed(nodes))) for k in keys}  # order-free
    assert min(Counter(n.name for n in before.values()).values()) > 300  # 400 each expected
    gone = nodes[2]
    after = {k: Rendezvous[Node](k).pick([n for n in nodes if n is not gone]) for k in keys}
    assert {k for k in keys if after[k] is not before[k]} == {k for k in keys if before[k] is gone}
    # Unavailable (ejected) or already tried: the same second choice, and only for its keys.
    gone.available = False
    assert {k: Rendezvous[Node](k).pick(nodes) for k in keys} == after
    gone.available = True
    assert {k: Rendezvous[Node](k).pick(nodes, exclude=[gone]) for k in keys} == after
    # A new instance takes keys only for itself.
    grown = {k: Rendezvous[Node](k).pick([*nodes, Node("10.0.0.9:80")]) for k in keys}
    assert all(grown[k] is before[k] or grown[k].name == "10.0.0.9:80" for k in keys)


def test_rendezvous_shares_follow_the_weights() -> None:
    heavy, light = Node("heavy", 3), Node("light", 1)
    picks = Counter(Rendezvous[Node](stable_hash(b"k%d" % i)).pick([heavy, light]).name for i in range(8000))
    assert 0.72 < picks["heavy"] / 8000 < 0.78  # 0.75 expected
    with pytest.raises(NoInstanceAvailable):
        Rendezvous[Node](1).pick([Node("x", available=False)])
