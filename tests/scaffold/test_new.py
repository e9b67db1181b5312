"""``edgeway new``: services and edges written into a repository, whose own tests then pass.

One repository is scaffolded per module (copier takes about a second a run): two services, a BFF
and an API gateway over them, and a third service made after the edges. Its files, the CLI's
report and errors are checked here; then each generated project's own test suite runs with this
interpreter (``python -m pytest`` in its folder): the service's against a real NATS it starts on
a free port, the edges' by starting ``edgeway gateway`` on their config.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import COMPILED_RUN
from edgeway.cli import build_app
from edgeway.gateway.config import load_config

pytestmark = [
    pytest.mark.xdist_group("scaffold"),  # one worker scaffolds the repository once
    pytest.mark.timeout(300),
]

APP = build_app("new")


def _new(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(APP, ["new", *args])
    return result.exit_code, result.output


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Repo:
    root: Path
    said: dict[str, str]  # what `edgeway new` printed, by the name made


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("repo") / "shop"  # --dir creates it
    said: dict[str, str] = {}
    for args in (
        ("service", "billing"),
        ("service", "order-history"),
        ("gateway", "web-bff", "--pattern", "bff"),
        ("gateway", "api"),  # the default pattern
        ("service", "payments"),  # after the edges: not included by them
    ):
        code, out = _new(*args, "--dir", str(root))
        assert code == 0, out
        said[args[1]] = out
    return Repo(root, said)


def test_a_service_is_written_in_the_repository_layout(repo: Repo) -> None:
    files = {path for path in _files(repo.root) if "billing" in path}
    assert files == {
        "edges/routes/billing.yaml",
        "services/billing/README.md",
        "services/billing/pyproject.toml",
        "services/billing/src/billing/__init__.py",
        "services/billing/src/billing/__main__.py",
        "services/billing/src/billing/app.py",
        "services/billing/src/billing/events.py",
        "services/billing/src/billing/handlers.py",
        "services/billing/src/billing/settings.py",
        "services/billing/tests/conftest.py",
        "services/billing/tests/test_events.py",
        "services/billing/tests/test_health.py",
        "services/billing/tests/test_items.py",
    }
    # the entry the system file gets (printed until edgeway.system.yaml's format lands)
    said = repo.said["billing"]
    assert "services:\n    billing:\n      command: [python, -m, billing]" in said
    assert "routes: edges/routes/billing.yaml" in said
    hyphenated = repo.root / "services/order-history/src/order_history/app.py"
    assert "class OrderHistoryService(Service):" in hyphenated.read_text()


def test_an_edge_includes_every_service_already_there_and_its_config_loads(repo: Repo) -> None:
    for edge, routes in (("web-bff", 6), ("api", 4)):
        path = repo.root / "edges" / edge / "gateway.yaml"
        assert "include: [../routes/billing.yaml, ../routes/order-history.yaml]" in path.read_text()
        config = load_config(path)
        assert set(config.services) == {"billing", "order-history"}
        assert len(config.routes) == routes, [r.id for r in config.routes]
        assert config.name == edge
    assert "services: [billing, order-history]" in repo.said["web-bff"]
    bff = load_config(repo.root / "edges/web-bff/gateway.yaml")
    assert bff.cors is not None
    assert [r.id for r in bff.routes if r.aggregate is not None] == ["billing-screen", "order-history-screen"]
    # a service made after the edges: the CLI says where to add it
    for edge in ("api", "web-bff"):
        assert (
            f"add '../routes/payments.yaml' to the include list of edges/{edge}/gateway.yaml"
            in (repo.said["payments"])
        )


def test_the_generated_code_is_lint_clean(repo: Repo) -> None:
    for project in ("services/billing", "services/order-history", "edges/web-bff", "edges/api"):
        folder = repo.root / project
        for check in (["check"], ["format", "--check"]):
            done = subprocess.run(
                [sys.executable, "-m", "ruff", *check, "."], cwd=folder, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{project}: ruff {check}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", ["Billing", "bill_ing", "json", "x-"])
def test_a_bad_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    code, out = _new("service", name, "--dir", str(tmp_path))
    assert code == 2
    assert f"edgeway new: service name {name!r}" in out
    assert "Traceback" not in out
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_never_overwritten_and_nothing_is_half_written(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(repo.root), str(root)], check=True)
    app = root / "services/billing/src/billing/app.py"
    app.write_text("# my own work\n")
    (root / "services/billing/tests/test_items.py").unlink()
    before = _files(root)
    code, out = _new("service", "billing", "--dir", str(root))
    assert code == 2
    assert "12 file(s) would be overwritten" in out
    assert "nothing was written" in out
    assert _files(root) == before  # the deleted test is not put back either: all or nothing

    (root / "edges/web").mkdir()
    (root / "edges/web/gateway.yaml").write_text("routes: []\n")
    code, out = _new("gateway", "web", "--dir", str(root))
    assert code == 2
    assert "edges/web/gateway.yaml" in out
    assert (root / "edges/web/gateway.yaml").read_text() == "routes: []\n"
    assert not (root / "edges/web/tests").exists()


def test_an_unknown_pattern_a_reserved_name_or_a_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    code, out = _new("gateway", "web", "--pattern", "direct", "--dir", str(tmp_path))
    assert (code, "pattern 'direct' is not one of: gateway, bff" in out) == (2, True), out
    code, out = _new("gateway", "routes", "--dir", str(tmp_path))
    assert (code, "edges/routes/ holds the services' route files" in out) == (2, True), out
    target = tmp_path / "file"
    target.write_text("x")
    code, out = _new("service", "billing", "--dir", str(target))
    assert (code, f"{target} is not a directory" in out) == (2, True), out
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.skipif(COMPILED_RUN, reason="the generated projects are tested once, in the run on the sources")
def test_each_generated_project_passes_its_own_tests(repo: Repo) -> None:
    # Nothing of this run's pytest leaks into theirs (xdist's worker variables, our addopts).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE_"))}
    # Only the plugins a generated project asks for (pytest-asyncio), as in its own environment;
    # the dev environment's others (hypothesis, schemathesis, playwright...) double the start-up.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    projects = ("services/billing", "edges/web-bff", "edges/api")
    runs = {
        project: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asyncio"],
            cwd=repo.root / project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for project in projects  # concurrently: most of each run is waiting on a process start
    }
    for project, process in runs.items():
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0, f"{project}:\n{out}"
        summary = out.strip().splitlines()[-1]
        assert " passed" in summary, f"{project}:\n{out}"
        assert "skipped" not in summary, f"{project}:\n{out}"
