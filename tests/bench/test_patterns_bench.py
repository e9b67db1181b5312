"""``python -m bench patterns``: its headline keys come from the figures of a run, and a run that
lacks a pattern is a harness error naming the missing figure (the measurement itself runs in
tests/shop/test_control_room_browser.py, through the same code and delay proxies)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.patterns import HEADLINE, headline
from edgeway.demo.control.patterns import pattern_figures


def _row(edge: str, screen: str, calls: int, size: int, p50: float) -> dict[str, Any]:
    return {
        "edge": edge,
        "screen": screen,
        "calls_per_screen": calls,
        "bytes_per_screen": size,
        "p50_ms": p50,
    }


def test_the_headline_figures_are_read_from_each_pattern_and_screen() -> None:
    run = {
        "screens": [
            _row("direct", "home", 3, 1549, 61.0),
            _row("direct", "product", 3, 325, 60.0),
            _row("gateway", "product", 1, 190, 47.0),
            _row("web-bff", "home", 1, 1445, 49.0),
            _row("web-bff", "product", 1, 277, 45.0),
            _row("mobile-bff", "home", 1, 556, 44.0),
            _row("mobile-bff", "product", 1, 74, 43.0),
        ]
    }
    figures = pattern_figures(run)
    assert headline(figures) == {
        "direct_home_ms": 61.0,
        "bff_home_ms": 49.0,
        "gateway_product_ms": 47.0,
        "direct_home_calls": 3,
        "bff_home_calls": 1,
        "direct_home_bytes": 1549,
        "bff_home_bytes": 1445,
        "mobile_product_bytes": 74,
    }
    assert list(headline(figures)) == list(HEADLINE)
    assert figures["mobile_home_bytes"] == 556


def test_a_run_without_a_pattern_names_the_missing_figures() -> None:
    figures = pattern_figures({"screens": [_row("direct", "home", 3, 1549, 61.0)]})
    with pytest.raises(BenchError, match="no figure for bff_home_ms, gateway_product_ms"):
        headline(figures)


def test_the_docs_record_every_headline_figure_with_the_command() -> None:
    page = (Path(__file__).parents[2] / "docs" / "patterns.md").read_text()
    assert "python -m bench patterns --json" in page
    recorded = dict(re.findall(r"^\| `(\w+)` \| ([\d.,]+) \|$", page, re.MULTILINE))
    assert [key for key in HEADLINE if key not in recorded] == []
    # the calls per screen are what the patterns are about: they cannot drift from the code's
    assert (recorded["direct_home_calls"], recorded["bff_home_calls"]) == ("3", "1")
