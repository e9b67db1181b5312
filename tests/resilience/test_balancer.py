from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from edgeway.resilience.balancer import LeastOutstanding, NoInstanceAvailable, RoundRobin, make_balancer


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
