"""The fault benchmark's pieces that the fault tests do not reach: the backend's controls, the
targets and the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import faults
from bench.errors import BenchError


@pytest.fixture
def fault_backend(tmp_path: Path) -> Iterator[int]:
    process = faults.backend(tmp_path, "x", 0, "--mode", "flaky", "--fail-ratio", "1").start()
    yield process.port
    process.stop()


async def test_the_fault_backend_fails_hangs_and_counts_on_command(fault_backend: int) -> None:
    port = fault_backend
    status, body = await faults.http_get(port, "/anything")
    assert status == 500
    assert json.loads(body) == {"error": "injected failure"}
    await faults.set_mode(port, "ok")
    status, body = await faults.http_get(port, "/anything")
    assert (status, json.loads(body)) == (200, {"backend": "x"})
    assert await faults.backend_stats(port) == {"name": "x", "mode": "ok", "requests": 2, "failed": 1}
    await faults.set_mode(port, "ok", reset=True)
    assert (await faults.backend_stats(port))["requests"] == 0
    with pytest.raises(BenchError, match="refused mode 'sideways'"):
        await faults.set_mode(port, "sideways")


def canned(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "kill": {"kill_error_rate": 0.0, "errors_after_2s": 0, "recovery_s": 0.4},
        "hang": {"fast_p99_ms": 3.0},
        "flaky": {"retry_share": 0.21, "budget_cap_share": 0.21},
        "flaky_budget_100": {"amplification": 1.5},
        "reload": {"skipped": "not built"},
        "reload_failed": None,
        "details": {"machine": {"cpu": "x", "cores": 2, "loadavg_1m": 0.1}},
    }
    result.update(overrides)
    return result


def test_targets_follow_the_issue_and_a_skipped_reload_is_not_measured() -> None:
    met = {t.name: t.met for t in faults.targets(canned())}
    assert met == {
        "kill_error_rate": True,
        "kill errors later than 2 s": True,
        "recovery_s": True,
        "hang: answers while open, p99 ms": True,
        "flaky: retry share within the budget": True,
        "reload_failed": None,
    }
    missed = faults.targets(canned(kill={"kill_error_rate": 0.01, "errors_after_2s": 3, "recovery_s": 2.5}))
    assert [t.met for t in missed[:3]] == [False, False, False]


def test_the_report_prints_json_or_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    result = canned()
    faults.report(result, faults.targets(result), as_json=True)
    assert json.loads(capsys.readouterr().out)["reload"] == {"skipped": "not built"}
    faults.report(result, faults.targets(result), as_json=False)
    out = capsys.readouterr().out
    assert "edgeway bench faults" in out
    assert "reload_failed <= 0: - not measured" in out
