from __future__ import annotations

import sys
from pathlib import Path

from bench import legs, wrk
from bench.harness import ManagedProcess
from bench.proxy import backend_process
from conftest import require


def result(requests: int, **errors: int) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=requests,
        duration_s=1.0,
        bytes=0,
        p50_ms=1,
        p90_ms=1,
        p99_ms=1,
        p999_ms=1,
        mean_ms=1,
        max_ms=1,
        errors=wrk.WrkErrors(**errors),
    )


def test_error_responses_beyond_a_tenth_of_a_percent_invalidate_a_run() -> None:
    assert legs.acceptable(result(10_000, status=10))
    assert not legs.acceptable(result(10_000, status=11))
    assert not legs.acceptable(result(10_000, connect=11))


def test_timeouts_of_an_overloaded_target_are_tolerated_up_to_one_percent() -> None:
    assert legs.acceptable(result(10_000, timeout=100))
    assert not legs.acceptable(result(10_000, timeout=101))
    assert not legs.acceptable(result(0))


def test_skipped_legs_keep_their_reason_and_are_never_started(tmp_path: Path) -> None:
    def explode(d: Path) -> ManagedProcess:
        raise AssertionError("a skipped leg must not start")

    leg = legs.Leg("x", "x", start=explode, skip="not installed")
    settings = legs.Settings(connections=(1,), duration_s=1, warmup_s=0)
    outcome = legs.run_legs([leg], settings, tmp_path)["x"]
    assert outcome.status is legs.Status.SKIPPED
    assert outcome.as_dict()["reason"] == "not installed"


def test_a_target_that_dies_mid_run_fails_its_leg_with_its_log(tmp_path: Path) -> None:
    require("wrk")
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "sys.stderr.write(f'listening on 127.0.0.1:{s.getsockname()[1]}\\n'); sys.stderr.flush()\n"
        "sys.stderr.write('crashing on purpose\\n'); time.sleep(0.3)\n"
    )

    def start(d: Path) -> ManagedProcess:
        return ManagedProcess("doomed", [sys.executable, "-c", code], port=0, log_dir=d).start()

    settings = legs.Settings(connections=(2,), duration_s=1, warmup_s=0)
    outcome = legs.run_legs([legs.Leg("doomed", "doomed", start=start)], settings, tmp_path)["doomed"]
    assert outcome.status is legs.Status.FAILED
    assert "died during the run" in (outcome.reason or "")
    assert "crashing on purpose" in (outcome.reason or "")


def test_repetitions_give_one_sample_each_and_a_median(tmp_path: Path) -> None:
    require("wrk")
    with backend_process(tmp_path, port=0) as backend:
        leg = legs.Leg("direct", "direct", url=backend.url)
        settings = legs.Settings(connections=(2,), duration_s=1, repetitions=2, warmup_s=0)
        outcome = legs.run_legs([leg], settings, tmp_path)["direct"]
    assert outcome.status is legs.Status.OK
    assert len(outcome.samples[2]) == 2
    rps = sorted(r.rps for r in outcome.samples[2])
    assert outcome.rps(2) == round((rps[0] + rps[1]) / 2, 1)
