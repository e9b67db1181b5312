"""``edgeway new``: services and edges written into a repository and its system file, whose own
tests then pass, which ``edgeway system check`` accepts, ``edgeway deploy render`` renders for
Kubernetes and compose, and ``edgeway demo --system`` runs.

One repository is scaffolded per module (copier takes about a second a run): an API gateway
first (it creates the system file), two services (each added to the gateway's includes), a BFF
over them, and a third service with a hyphenated name made after both edges. Its files, the
system file, the CLI's report and errors are checked here; then each generated project's own test
suite runs with this interpreter (``python -m pytest`` in its folder): the service's against a real
NATS it starts on a free port, the edges' by starting ``edgeway gateway`` on their config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from deploy_helpers import assert_locked_down, container_env, edge_config, of_kind, rendered_docs
from typer.testing import CliRunner

from conftest import COMPILED_RUN
from edgeway.cli import build_app
from edgeway.demo.launch import launched_demo
from edgeway.gateway.config import load_config
from edgeway.scaffold.system_file import default_text
from edgeway.system import load_system

pytestmark = [
    pytest.mark.xdist_group("scaffold"),  # one worker scaffolds the repository once
    pytest.mark.timeout(300),
]

SERVICES = ("stock", "prices", "order-history")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(args[0]), list(args))
    return result.exit_code, result.output


def _new(*args: str) -> tuple[int, str]:
    return _run("new", *args)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Repo:
    root: Path
    said: dict[str, str]  # what `edgeway new` printed, by the name made

    @property
    def system_file(self) -> Path:
        return self.root / "edgeway.system.yaml"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("repo") / "market"  # --dir creates it; the system's name
    said: dict[str, str] = {}
    for args in (
        ("gateway", "edge", "--pattern", "gateway"),  # first: creates the system file
        ("service", "stock"),
        ("service", "prices"),
        ("gateway", "web-bff", "--pattern", "bff"),
        ("service", "order-history"),  # after both edges: added to their includes
    ):
        code, out = _new(*args, "--dir", str(root))
        assert code == 0, out
        said[args[1]] = out
    return Repo(root, said)


def test_a_service_is_written_in_the_repository_layout(repo: Repo) -> None:
    files = {path for path in _files(repo.root) if "stock" in path}
    assert files == {
        "edges/routes/stock.yaml",
        "services/stock/.dockerignore",
        "services/stock/Dockerfile",
        "services/stock/README.md",
        "services/stock/pyproject.toml",
        "services/stock/src/stock/__init__.py",
        "services/stock/src/stock/__main__.py",
        "services/stock/src/stock/app.py",
        "services/stock/src/stock/events.py",
        "services/stock/src/stock/handlers.py",
        "services/stock/src/stock/settings.py",
        "services/stock/tests/conftest.py",
        "services/stock/tests/test_events.py",
        "services/stock/tests/test_health.py",
        "services/stock/tests/test_items.py",
    }
    hyphenated = repo.root / "services/order-history/src/order_history/app.py"
    assert "class OrderHistoryService(Service):" in hyphenated.read_text()
    # it listens where the system file says, also when run on its own
    settings = (repo.root / "services/stock/src/stock/settings.py").read_text()
    assert "port: int = Field(default=8001," in settings
    route = (repo.root / "edges/routes/order-history.yaml").read_text()
    assert '["${MARKET_URL_ORDER_HISTORY:-http://127.0.0.1:8003}"]' in route


def test_each_entry_is_written_into_the_system_file_in_its_format(repo: Repo) -> None:
    assert "created with edgeway.system.yaml: edges.edge" in repo.said["edge"]
    assert "added to edgeway.system.yaml: services.stock" in repo.said["stock"]
    assert "its entry for the system file" not in repo.said["stock"]  # no longer printed to paste
    system = load_system(repo.system_file).model
    assert system.system == "market"
    assert system.prefix == "MARKET"
    assert list(system.services) == list(SERVICES)
    for port, (name, service) in enumerate(system.services.items(), 8001):
        assert service.module == name.replace("-", "_")
        assert service.path == f"services/{name}"
        assert service.image == f"market/{name}:0.1.0"
        assert (service.port, service.database, service.kind, service.instances) == (port, name, "kit", 1)
    assert {n: (e.pattern, e.port, e.admin_port) for n, e in system.edges.items()} == {
        "edge": ("gateway", 8080, 8180),
        "web-bff": ("bff", 8081, 8181),
    }
    # the file is the default one with the entries added: every line of it is still there, in order
    text = repo.system_file.read_text()
    lines = iter(text.splitlines())
    for line in default_text("market").splitlines():
        if line not in ("services: {}", "edges: {}"):
            assert any(line == have for have in lines), f"lost: {line!r}"
    assert "services:\n  stock:\n    module: stock\n    path: services/stock\n" in text
    assert "edges:\n  edge:\n    config: edges/edge/gateway.yaml\n    pattern: gateway\n" in text


def test_a_new_service_is_added_to_every_edge_and_their_configs_load(repo: Repo) -> None:
    for name in ("edge", "web-bff"):
        change = f"included in edge {name!r}: ../routes/order-history.yaml (gateway.yaml)"
        assert change in repo.said["order-history"]
    every = "include: [../routes/stock.yaml, ../routes/prices.yaml, ../routes/order-history.yaml]\n"
    gateway = repo.root / "edges/edge/gateway.yaml"
    # made before any service: each one since was added, its comments kept
    assert every in gateway.read_text()
    assert gateway.read_text().startswith("# edge: an API gateway (the Gateway pattern)")
    bff = repo.root / "edges/web-bff/gateway.yaml"
    assert every in bff.read_text()
    for path, routes, ports in ((gateway, 6, (8080, 8180)), (bff, 8, (8081, 8181))):
        config = load_config(path)
        assert set(config.services) == set(SERVICES)
        assert len(config.routes) == routes, [r.id for r in config.routes]
        assert config.admin is not None
        assert (config.listen.port, config.admin.port) == ports
    screens = [r.id for r in load_config(bff).routes if r.aggregate is not None]
    assert screens == ["stock-screen", "prices-screen"]  # one per service there was when it was made


def test_the_generated_code_is_lint_clean(repo: Repo) -> None:
    for project in ("services/stock", "services/order-history", "edges/web-bff", "edges/edge"):
        folder = repo.root / project
        for check in (["check"], ["format", "--check"]):
            done = subprocess.run(
                [sys.executable, "-m", "ruff", *check, "."], cwd=folder, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{project}: ruff {check}\n{done.stdout}{done.stderr}"


def test_the_service_image_is_edgeways_recipe_set_for_the_service(repo: Repo) -> None:
    from dockerfile_checks import copy_sources, excluded, files_under, hadolint, instructions

    from edgeway.deploy import TEMPLATES

    folder = repo.root / "services/order-history"
    recipe = (folder / "Dockerfile").read_text()
    template = (TEMPLATES / "service.Dockerfile").read_text()
    changed = {(a, b) for a, b in zip(template.splitlines(), recipe.splitlines(), strict=True) if a != b}
    assert {b for _, b in changed} == {
        "#   docker build -t market/order-history:0.1.0 .",
        "    EDGEWAY_PORT=8003 \\",
        "    EDGEWAY_HEALTH_URL=http://127.0.0.1:8003/health/ready",
        "EXPOSE 8003",
        "ARG SERVICE_MODULE=order_history",
    }
    assert (folder / ".dockerignore").read_text() == (TEMPLATES / "service.dockerignore").read_text()
    # what it copies is in the service's folder and reaches the build
    ignore = (folder / ".dockerignore").read_text()
    sources = [source for _, source in copy_sources(recipe)]
    assert sources == ["pyproject.toml", "src/"]
    for source in sources:
        found = files_under(folder, source)
        assert found, source
        assert not [path for path in found if excluded(path, ignore)]
    assert [i.args for i in instructions(recipe) if i.keyword == "USER"] == ["10001:10001"]
    linted = subprocess.run(
        [hadolint(), "--no-color", str(folder / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_taken_name_an_existing_file_or_a_bad_result_writes_nothing(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(repo.root), str(root)], check=True)
    before = _files(root)

    code, out = _new("service", "stock", "--dir", str(root))
    assert code == 2
    line = (root / "edgeway.system.yaml").read_text().splitlines().index("  stock:") + 1
    assert f"{root / 'edgeway.system.yaml'}:{line}: the system has a service named 'stock' already" in out
    code, out = _new("service", "edge", "--dir", str(root))
    assert (code, "the system has an edge named 'edge' already" in out) == (2, True), out
    code, out = _new("gateway", "nats", "--dir", str(root))
    assert (code, "gateway name 'nats' is kept for the system's own processes" in out) == (2, True), out
    assert _files(root) == before

    (root / "services/refunds").mkdir()
    (root / "services/refunds/README.md").write_text("# my own work\n")
    before = _files(root)
    code, out = _new("service", "refunds", "--dir", str(root))
    assert code == 2
    assert "1 file(s) would be overwritten" in out
    assert "nothing was written" in out
    assert _files(root) == before  # nor the system file, nor an edge's includes

    (root / "edges/web").mkdir()
    (root / "edges/web/gateway.yaml").write_text("routes: []\n")
    before = _files(root)
    code, out = _new("gateway", "web", "--dir", str(root))
    assert code == 2
    assert "edges/web/gateway.yaml" in out
    assert _files(root) == before

    # a name free in the file, but the file would not check with it: the files copied in are
    # taken out again, the system file stays as it was
    system = root / "edgeway.system.yaml"
    system.write_text(system.read_text().replace("    port: 8003\n", "    port: 8003\n    instances: 2\n"))
    before = _files(root)
    code, out = _new("service", "order-history-2", "--dir", str(root))
    assert code == 2, out
    assert "would not be valid with the new entry; nothing was written" in out
    assert "services.order-history-2: the name 'order-history-2' is already services.order-history's" in out
    assert _files(root) == before
    assert not (root / "services/order-history-2").exists()


@pytest.mark.parametrize("name", ["Billing", "bill_ing", "json", "x-"])
def test_a_bad_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    code, out = _new("service", name, "--dir", str(tmp_path))
    assert code == 2
    assert f"edgeway new: service name {name!r}" in out
    assert "Traceback" not in out
    assert list(tmp_path.iterdir()) == []


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


def test_the_repository_checks_and_renders_for_kubernetes_and_compose(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.root)
    code, out = _run("system", "check", "edgeway.system.yaml")
    assert code == 0, out
    assert out.startswith("ok: edgeway.system.yaml (3 services in 3 processes, 2 edges, broker NATS")

    code, out = _run("deploy", "render", "--target", "kubernetes", "--out", "k8s")
    assert code == 0, out
    assert "docker build -t market/order-history:0.1.0 services/order-history" in out
    docs = rendered_docs(repo.root / "k8s")
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {*SERVICES, "edge", "web-bff"}
    for name in SERVICES:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"market/{name}:0.1.0"  # its own image, not edgeway's
        assert container["command"] == ["python", "-m", name.replace("-", "_")]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert_locked_down(docs)
    for file, doc in docs:
        try:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    # the edge's config files (its own and the route files it includes) ship in its ConfigMap,
    # and load as its pod will: every service found by DNS, listening on every address
    config = edge_config(repo.root / "pod", docs, "edge")
    assert config.listen.host == "0.0.0.0"
    assert config.listen.port == 8080
    for name in SERVICES:
        discovery = config.services[name].discovery
        assert discovery is not None
        assert discovery.dns is not None
        assert discovery.dns.name == f"_http._tcp.{name}.market.svc.cluster.local"
    assert container_env(docs, "stock")["MARKET_URL_STOCK"] == "http://stock:8001"
    overlay = yaml.safe_load((repo.root / "k8s/overlays/production/kustomization.yaml").read_text())
    assert {"name": "market/stock", "newName": "market/stock", "newTag": "0.1.0"} in overlay["images"]

    code, out = _run("deploy", "render", "--target", "compose", "--out", "compose")
    assert code == 0, out
    project = yaml.safe_load((repo.root / "compose/compose.yaml").read_text())
    assert set(project["services"]) == {*SERVICES, "edge", "web-bff", "nats"}
    assert project["services"]["prices"]["image"] == "market/prices:0.1.0"
    wiring = dict(
        line.split("=", 1)
        for line in (repo.root / "compose/wiring.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    edge = project["services"]["edge"]
    env = {**wiring, **{k: str(v) for k, v in edge["environment"].items()}}
    loaded = load_config(repo.root / "compose/edges/edge/edge-compose.yaml", env)
    assert set(loaded.services) == set(SERVICES)
    assert (repo.root / "compose/edges/edge/routes/stock.yaml").is_file()
    # rendered again: an include since dropped, or an edge, does not linger in its folder
    (repo.root / "compose/edges/edge/routes/gone.yaml").write_text("routes: []\n")
    (repo.root / "compose/edges/old-edge/old-edge").mkdir(parents=True)
    (repo.root / "compose/edges/old-edge/old-edge/gateway.yaml").write_text("routes: []\n")
    code, out = _run("deploy", "render", "--target", "compose", "--out", "compose")
    assert code == 0, out
    assert not (repo.root / "compose/edges/edge/routes/gone.yaml").exists()
    assert not (repo.root / "compose/edges/old-edge").exists()
    assert (repo.root / "compose/edges/edge/routes/stock.yaml").is_file()


@pytest.mark.skipif(COMPILED_RUN, reason="the generated projects are tested once, in the run on the sources")
def test_each_generated_project_passes_its_own_tests(repo: Repo) -> None:
    # Nothing of this run's pytest leaks into theirs (xdist's worker variables, our addopts).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE_"))}
    # Only the plugins a generated project asks for (pytest-asyncio), as in its own environment;
    # the dev environment's others (hypothesis, schemathesis, playwright...) double the start-up.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    projects = ("services/stock", "edges/web-bff", "edges/edge")
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
    # stock: health, API, events; web-bff: its config, health, a 404, three services' routes,
    # two screens and their CORS; edge (made first): the three services added to it since
    expected = {"services/stock": 7, "edges/web-bff": 10, "edges/edge": 6}
    for project, process in runs.items():
        try:
            out, _ = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            # Say which project hung and where: its output so far, with pytest's own traceback
            # of every thread (faulthandler, on SIGABRT) if it still answers.
            process.send_signal(signal.SIGABRT)
            try:
                out, _ = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            pytest.fail(f"{project}: its tests did not end within 240 s:\n{out}")
        assert process.returncode == 0, f"{project}:\n{out}"
        summary = out.strip().splitlines()[-1]
        assert f"{expected[project]} passed" in summary, f"{project}:\n{out}"
        assert "skipped" not in summary, f"{project}:\n{out}"


@pytest.mark.skipif(COMPILED_RUN, reason="the demo of a scaffolded system runs once, on the sources")
def test_the_demo_runs_the_scaffolded_system(repo: Repo, tmp_path: Path) -> None:
    """``edgeway demo --system``: its processes under the demo's supervisor, reached through the
    edge; the banner lists them from the file."""
    with launched_demo(tmp_path, system=repo.system_file, pattern="gateway") as demo:
        banner = demo.output()
        assert "all 5 processes are ready" in banner  # nats, three services, the gateway
        assert f"the system market ({repo.system_file}), pattern: gateway" in banner
        assert f"edge (API gateway)\n      {demo.url('edge')}/\n" in banner
        assert f"order-history (direct, OpenAPI)\n      {demo.url('order-history')}/docs\n" in banner
        assert "web-bff" not in banner
        assert "alice" not in banner  # the shop's credentials are the shop's
        with httpx.Client(base_url=demo.url("edge"), timeout=10.0) as http:
            for name in SERVICES:
                response = http.get(f"/{name}/items")
                assert (response.status_code, response.json()) == (200, []), response.text
            created = http.post("/stock/items", json={"title": "a crate"})
            assert created.status_code == 201, created.text
            # the event went through the embedded NATS to the service's own consumer
            deadline = time.monotonic() + 15
            while http.get("/stock/stats").json() != {"items_created": 1}:
                assert time.monotonic() < deadline, demo.output()[-3000:]
                time.sleep(0.1)
        assert (tmp_path / "data" / "stock.db").is_file()  # its SQLite file, in the demo's data
    assert demo.process.returncode == 0, demo.output()[-3000:]
