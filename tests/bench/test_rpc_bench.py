"""The RPC benchmarks' arithmetic (bench.rpc_stats) and the command's options, without a run."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from bench import rpc_stats
from bench.cli import app


def _run(concurrency: int, latencies: list[int], cpu_s: float, wall_s: float) -> dict[str, Any]:
    return {
        "calls": len(latencies),
        "concurrency": concurrency,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "latencies_us": latencies,
    }


def _output(leg: str, scale: int, *, counted: bool) -> dict[str, Any]:
    """A leg's output: 100 calls at 1 caller (latencies 1..100 x scale) and at 32."""
    out: dict[str, Any] = {
        "leg": leg,
        "runs": [
            _run(1, [i * scale for i in range(1, 101)], cpu_s=0.02, wall_s=0.5),
            _run(32, [i * scale * 10 for i in range(1, 101)], cpu_s=0.01, wall_s=0.05),
        ],
    }
    if counted:
        out.update(bytes_up=230.4, bytes_down=331.0)
    return out


def test_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 101))
    assert rpc_stats.percentile(values, 50) == 50
    assert rpc_stats.percentile(values, 99) == 99
    assert rpc_stats.percentile(values, 100) == 100
    assert rpc_stats.percentile([7], 50) == 7
    assert rpc_stats.percentile([], 50) == 0
    assert rpc_stats.percentile([30, 10, 20], 50) == 20  # unsorted input


def test_a_run_becomes_cpu_per_call_latency_and_calls_per_second() -> None:
    figures = rpc_stats.summarize(_run(1, list(range(1, 101)), cpu_s=0.02, wall_s=0.5))
    assert figures == {"cpu_us_per_call": 200.0, "p50_us": 50.0, "p99_us": 99.0, "rps": 200.0}
    with pytest.raises(ValueError, match="needs calls and time"):
        rpc_stats.summarize(_run(1, [], cpu_s=0.0, wall_s=0.0))


def test_repetitions_are_reduced_to_their_median_per_concurrency() -> None:
    outputs = [_output("kit", scale, counted=False) for scale in (1, 3, 2)]
    figures = rpc_stats.by_concurrency(outputs)
    assert set(figures) == {"c1", "c32"}
    assert figures["c1"]["p50_us"] == 100.0  # the median of 50, 150, 100
    assert figures["c32"]["p50_us"] == 1000.0
    assert figures["c32"]["rps"] == 2000.0


def test_the_rpc_result_has_the_top_level_keys_from_the_right_concurrency() -> None:
    legs = {
        "kit": [_output("kit", 4, counted=True), _output("kit", 4, counted=False)],
        "grpc": [_output("grpc", 2, counted=True)],
        "nats": [_output("nats", 1, counted=True)],
    }
    result = rpc_stats.rpc_result(legs, [1, 32])
    for key in (
        "http_json_p50_us",
        "grpc_p50_us",
        "nats_p50_us",
        "http_json_rps",
        "grpc_rps",
        "nats_rps",
        "bytes_json",
        "bytes_grpc",
    ):
        assert key in result
    # p50 at one caller, calls/s at 32, bytes both ways rounded
    assert (result["http_json_p50_us"], result["grpc_p50_us"], result["nats_p50_us"]) == (200.0, 100.0, 50.0)
    assert result["http_json_rps"] == 2000.0
    assert result["bytes_json"] == 561
    assert result["detail"]["grpc"]["c32"]["p50_us"] == 1000.0
    assert "http_json_bare_p50_us" not in result  # that leg did not run
    legs["kit_bare"] = [_output("kit", 3, counted=False)]
    legs["grpc_kit"] = [_output("grpc_kit", 5, counted=True)]
    both = rpc_stats.rpc_result(legs, [1, 32])
    assert (both["http_json_bare_p50_us"], both["grpc_kit_p50_us"]) == (150.0, 250.0)
    assert both["bytes_grpc_kit"] == 561
    assert "grpc_peer_cpu_us_per_call" not in result  # not measured in these outputs


def test_the_answering_sides_cpu_is_divided_by_every_call_the_leg_made() -> None:
    from bench.rpc import served

    output = _output("grpc", 1, counted=True)
    output["byte_calls"] = 200
    # 2 concurrencies x (50 warm-up + 100 measured) + 20 + 200 in the byte pass
    assert served(output, warmup=50) == 520
    runs = []
    for seconds in (0.52, 1.04, 0.26):
        one = dict(output, peer_cpu_s=seconds, peer_calls=served(output, warmup=50))
        runs.append(one)
    assert rpc_stats.peer_cpu_us_per_call(runs) == 1000.0  # the median of 1000, 2000, 500
    result = rpc_stats.rpc_result({"kit": runs, "grpc": runs, "nats": runs}, [1, 32])
    assert result["grpc_peer_cpu_us_per_call"] == 1000.0
    assert result["detail"]["nats"]["peer_cpu_us_per_call"] == 1000.0


def test_the_commands_refuse_bad_options_before_starting_anything() -> None:
    runner = CliRunner()
    for command in ("rpc", "kit-client"):
        refused = runner.invoke(app, [command, "--concurrency", "1,zero"])
        assert refused.exit_code == 2
        assert "comma-separated integers" in refused.output
        assert runner.invoke(app, [command, "--calls", "3"]).exit_code == 2


async def test_the_bare_http_peer_answers_the_call_and_refuses_a_bad_body() -> None:
    import asyncio

    import orjson

    from bench.rpc_bare import BareJson
    from bench.rpc_peer import REQUEST, answer
    from edgeway.service.peer_http import PeerHttp

    server = await asyncio.get_running_loop().create_server(BareJson, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    http = PeerHttp()
    try:
        headers = {"content-type": "application/json"}
        for _ in range(2):  # the second on the kept-alive connection
            status, _, body = await http.send(
                "POST", url, "/stock/check", headers, orjson.dumps(REQUEST), 2.0
            )
            assert (status, orjson.loads(body)) == (200, answer(REQUEST["sku"], REQUEST["qty"]))
        status, _, _ = await http.send("POST", url, "/stock/check", headers, b"{}", 2.0)
        assert status == 400
    finally:
        await http.aclose()
        server.close()
