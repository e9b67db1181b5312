from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgeway import bench_cli
from edgeway.bench_cli import app

runner = CliRunner()


def test_repo_root_is_the_checkout_holding_bench() -> None:
    root = bench_cli.repo_root()
    assert (root / "bench" / "__init__.py").is_file()
    assert (root / "src" / "edgeway" / "bench_cli.py").is_file()


def test_a_missing_harness_is_reported_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import edgeway

    fake = tmp_path / "site-packages" / "edgeway" / "__init__.py"
    fake.parent.mkdir(parents=True)
    fake.touch()
    monkeypatch.setattr(edgeway, "__file__", str(fake))
    with pytest.raises(bench_cli.BenchNotFoundError, match="source checkout"):
        bench_cli.repo_root()


def test_an_unknown_benchmark_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info:
        bench_cli.load("no_such_benchmark")
    assert info.value.exit_code == 2
    assert "there is no `no_such_benchmark` benchmark" in capsys.readouterr().err


def test_connections_must_be_positive_integers() -> None:
    result = runner.invoke(app, ["proxy", "--connections", "32,x"])
    assert result.exit_code == 2
    assert bench_cli._parse_connections("32, 256") == [32, 256]
    with pytest.raises(typer.BadParameter):
        bench_cli._parse_connections("0")


def test_a_harness_error_exits_2_with_its_message() -> None:
    result = runner.invoke(app, ["proxy", "--only", "haproxy"])
    assert result.exit_code == 2
    assert "unknown leg" in result.output


def test_every_benchmark_has_a_command() -> None:
    result = runner.invoke(app, ["--help"])
    for name in ("proxy", "slow", "aggregate", "auth", "revocation", "bus", "faults"):
        assert name in result.output


def test_edgeway_bench_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from edgeway.cli import main; main()", "bench", "proxy", "--only", "haproxy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown leg(s) haproxy" in done.stderr
