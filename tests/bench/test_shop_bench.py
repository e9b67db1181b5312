"""`edgeway bench shop` runs: a tiny load through the Direct screens and the partner gateway."""

from __future__ import annotations

import json

import pytest

from bench import shop


@pytest.mark.slow
def test_the_shop_benchmark_loads_each_screen_of_each_edge(capsys: pytest.CaptureFixture[str]) -> None:
    result = shop.run(json=True, loads=3, concurrency=2, pattern="gateway")
    printed = json.loads(capsys.readouterr().out)
    assert printed["screens"] == result["screens"]
    assert {(s["edge"], s["screen"]) for s in result["screens"]} == {
        ("direct", "home"),
        ("direct", "product"),
        ("gateway", "product"),
    }
    assert result["errors"] == 0, result
    assert not result["failed"]
    assert all(s["loads"] == 3 and s["p50_ms"] > 0 for s in result["screens"])
    assert result["details"]["machine"]["cores"] >= 1
