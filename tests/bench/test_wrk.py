from __future__ import annotations

from pathlib import Path

import pytest

from bench import wrk
from bench.errors import WrkFailed
from bench.harness import ManagedProcess, python_module
from conftest import require

# Captured from `wrk -t2 -c32 -d3s -s edgeway_done.lua` against bench.backend on this machine.
SAMPLE = """\
Running 3s test @ http://127.0.0.1:18901/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   357.47us  362.72us   5.44ms   94.68%
    Req/Sec    50.22k    10.21k  110.43k    88.52%
  304610 requests in 3.10s, 39.22MB read
Requests/sec:  98287.80
Transfer/sec:     12.65MB
EDGEWAY_WRK {"requests":304610,"duration_us":3099164,"bytes":41122350,"errors":{"connect":0,"read":0,\
"write":0,"status":0,"timeout":0},"latency_us":{"min":14.0,"mean":357.5,"max":5442.0,"stdev":362.7,\
"p50":276.0,"p90":559.0,"p99":2201.0,"p999":4081.0}}
"""


def test_parse_output_reads_counts_and_percentiles_in_milliseconds() -> None:
    result = wrk.parse_output(SAMPLE)
    assert result.requests == 304610
    assert result.duration_s == pytest.approx(3.099164)
    assert result.rps == pytest.approx(304610 / 3.099164)
    assert result.p50_ms == pytest.approx(0.276)
    assert result.p90_ms == pytest.approx(0.559)
    assert result.p99_ms == pytest.approx(2.201)
    assert result.p999_ms == pytest.approx(4.081)
    assert result.max_ms == pytest.approx(5.442)
    assert result.errors.total == 0


def test_parse_output_counts_every_error_kind() -> None:
    text = SAMPLE.replace('"read":0', '"read":3').replace('"status":0', '"status":7')
    errors = wrk.parse_output(text).errors
    assert (errors.read, errors.status, errors.total) == (3, 7, 10)


def test_parse_output_without_the_result_line_says_the_script_is_missing() -> None:
    human_only = "\n".join(line for line in SAMPLE.splitlines() if not line.startswith("EDGEWAY_WRK"))
    with pytest.raises(WrkFailed, match="done\\(\\) script"):
        wrk.parse_output(human_only)


def test_parse_output_rejects_a_truncated_result_line() -> None:
    with pytest.raises(WrkFailed, match="unreadable result line"):
        wrk.parse_output('EDGEWAY_WRK {"requests": 12')


def test_as_dict_carries_the_derived_rate() -> None:
    d = wrk.parse_output(SAMPLE).as_dict()
    assert d["rps"] == pytest.approx(98287.8, abs=0.5)
    assert d["errors"]["timeout"] == 0


def test_command_never_asks_for_more_threads_than_connections(tmp_path: Path) -> None:
    argv = wrk.command("http://x/", connections=1, duration_s=0.4, threads=2, script=tmp_path / "s.lua")
    assert argv[1:4] == ["-t1", "-c1", "-d1s"]


def test_the_done_script_runs_under_wrk_and_its_line_parses(tmp_path: Path) -> None:
    require("wrk")
    argv = python_module("bench.backend", "--port", "0")
    with ManagedProcess("backend", argv, port=0, log_dir=tmp_path) as backend:
        result = wrk.run(
            backend.url + "/", connections=2, duration_s=1, threads=1, script=wrk.write_script(tmp_path)
        )
    assert result.requests > 100
    assert result.errors.total == 0
    assert 0 < result.p50_ms <= result.p99_ms
