"""The benchmarks' command: ``python -m bench`` in a checkout (``./dev bench``), not ``edgeway bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bench import cli
from bench.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_connections_must_be_positive_integers() -> None:
    result = runner.invoke(app, ["proxy", "--connections", "32,x"])
    assert result.exit_code == 2
    assert cli._parse_connections("32, 256") == [32, 256]
    with pytest.raises(typer.BadParameter):
        cli._parse_connections("0")


def test_a_harness_error_exits_2_with_its_message() -> None:
    result = runner.invoke(app, ["proxy", "--only", "haproxy"])
    assert result.exit_code == 2
    assert "unknown leg" in result.output


def test_every_benchmark_has_a_command() -> None:
    result = runner.invoke(app, ["--help"])
    for name in (
        "proxy",
        "slow",
        "aggregate",
        "auth",
        "revocation",
        "push",
        "bus",
        "shop",
        "patterns",
        "faults",
        "traffic",
    ):
        assert name in result.output


def test_python_m_bench_runs_from_the_checkout() -> None:
    # The checkout's root is the working directory (./dev cds there): `-m` finds bench/ itself.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "proxy", "--only", "haproxy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown leg(s) haproxy" in done.stderr


def test_edgeway_bench_points_at_the_developer_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from edgeway.cli import main; main()", "bench", "proxy", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "./dev bench" in done.stderr
    assert not (ROOT / "src" / "edgeway" / "bench_cli.py").exists()
