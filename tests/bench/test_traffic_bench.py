"""The traffic benchmark: its scenarios on a small scale against real processes (the figures'
plumbing, not their values), its targets and its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import traffic


async def test_every_scenario_measures_on_real_processes(tmp_path: Path) -> None:
    settings = {
        "requests": 300,
        "users": 30,
        "per_user": 3,
        "connections": 4,
        "mirror_connections": 2,
        "rate": 200.0,
        "leg_seconds": 0.3,
        "rounds": 3,
    }
    result = await traffic._run_all(tmp_path, settings)
    assert list(result)[:5] == list(traffic.FIGURES)
    split = result["split"]
    assert (split["requests"], split["failed"]) == (300, 0)
    assert split["split_error_pct"] == pytest.approx(abs(split["measured_pct"]["v1"] - 10.0), abs=0.01)
    assert split["split_error_pct"] < 8  # 300 requests: a share near 10 %, not 50 %
    sticky = result["sticky"]
    assert (sticky["sticky_violations"], sticky["requests"], sticky["failed"]) == (0, 90, 0)
    assert sum(sticky["keys_per_instance"].values()) == 30
    mirror = result["mirror"]
    assert mirror["failed"] == 0
    assert mirror["requests"]["plain"] > 10
    assert mirror["copies"].get("2xx", 0) > mirror["requests"]["mirror"]  # legs and paired, all copied
    assert set(mirror["paired_p99_ms"]) == {"plain", "mirror"}
    assert set(mirror["gateway_cpu_us_per_request"]) == {"plain", "mirror"}
    assert isinstance(result["mirror_added_p99_ms"], float)
    # One difference per round; the figure is their median (the middle one of three).
    differences = mirror["round_differences_ms"]
    assert len(differences) == 3
    assert result["mirror_added_p99_ms"] == sorted(differences)[1]
    low, high = mirror["differences_iqr_ms"]
    assert min(differences) <= low <= result["mirror_added_p99_ms"] <= high <= max(differences)
    rollback = result["rollback"]
    assert 0 < rollback["rollback_s"] < 10
    assert result["rollback_s"] == rollback["rollback_s"]
    assert rollback["failed_after_rollback"] == 0  # once rolled back, the old side serves everything
    assert 0 < result["failed_requests_during_rollback"] <= rollback["requests_after_failure_began"]
    assert rollback["last_new_side_answer_s"] <= rollback["rollback_s"] + 0.1


def canned(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "split_error_pct": 0.3,
        "sticky_violations": 0,
        "mirror_added_p99_ms": 0.2,
        "rollback_s": 1.5,
        "failed_requests_during_rollback": 40,
        "split": {"split_error_pct": 0.3},
        "sticky": {"sticky_violations": 0},
        "mirror": {"mirror_added_p99_ms": 0.2},
        "rollback": {"rollback_s": 1.5, "failed_requests_during_rollback": 40},
        "details": {"machine": {"cpu": "x", "cores": 2, "loadavg_1m": 0.1}},
    }
    result.update(overrides)
    return result


def test_targets_follow_the_issue() -> None:
    assert {t.name: t.met for t in traffic.targets(canned())} == {
        "split_error_pct": True,
        "sticky_violations": True,
        "mirror_added_p99_ms": True,
        "rollback_s": True,
    }
    missed = traffic.targets(
        canned(split_error_pct=2.5, sticky_violations=1, mirror_added_p99_ms=0.8, rollback_s=12.0)
    )
    assert [t.met for t in missed] == [False, False, False, False]
    assert [t.met for t in traffic.targets(canned(mirror_added_p99_ms=None))][2] is None


def test_the_report_prints_json_or_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    result = canned()
    traffic.report(result, traffic.targets(result), as_json=True)
    assert json.loads(capsys.readouterr().out)["sticky_violations"] == 0
    traffic.report(result, traffic.targets(result), as_json=False)
    out = capsys.readouterr().out
    assert "edgeway bench traffic" in out
    assert "mirror_added_p99_ms <= 0.5: 0.200 met" in out
