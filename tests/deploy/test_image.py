"""The image recipes, checked without a Docker engine (none runs here): hadolint, and checks of
our own that the recipe can only be honest — every file it copies exists and is not ignored,
every file pyproject.toml names is copied, the bases are pinned, and the final stage holds no
compiler, runs as a user, and has a health check."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from dockerfile_checks import (
    PINNED,
    base_images,
    copy_sources,
    excluded,
    files_under,
    hadolint,
    instructions,
    stages,
)

from edgeway.deploy import TEMPLATES, images

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TEMPLATE = TEMPLATES / "service.Dockerfile"
TEMPLATE_IGNORE = TEMPLATES / "service.dockerignore"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TEMPLATE], ids=["edgeway", "service-template"])
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_recipe(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3003" in result.stdout  # cd in RUN


def _check_sources(dockerfile: Path, context: Path, ignore: Path) -> list[str]:
    text, ignore_text = dockerfile.read_text(), ignore.read_text()
    problems = []
    for line, source in copy_sources(text):
        if not (context / source).exists():
            problems.append(f"{dockerfile.name}:{line}: COPY {source}: no such file in {context}")
            continue
        for path in files_under(context, source):
            if excluded(path, ignore_text):
                problems.append(
                    f"{dockerfile.name}:{line}: COPY {source}: {path} is excluded by {ignore.name}"
                )
    return problems


def test_every_file_the_image_copies_exists_and_reaches_the_build() -> None:
    assert _check_sources(DOCKERFILE, ROOT, DOCKERIGNORE) == []
    # and the checker finds a missing file and an ignored one
    assert copy_sources(DOCKERFILE.read_text())
    assert excluded("tests/conftest.py", DOCKERIGNORE.read_text())
    assert excluded("src/edgeway/__pycache__/cli.cpython-311.pyc", DOCKERIGNORE.read_text())
    assert not excluded("src/edgeway/demo/shop/edgeway.system.yaml", DOCKERIGNORE.read_text())


def test_the_checker_reports_a_missing_and_an_ignored_source(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "notes.md").write_text("")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.12.8-slim\nCOPY app.py missing.txt notes.md /app/\n")
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("*.md\n")
    problems = _check_sources(dockerfile, tmp_path, ignore)
    assert problems == [
        f"Dockerfile:2: COPY missing.txt: no such file in {tmp_path}",
        "Dockerfile:2: COPY notes.md: notes.md is excluded by .dockerignore",
    ]


def test_the_image_copies_every_file_the_build_reads() -> None:
    """pyproject.toml names the readme, the license and the build hook: the build fails without them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [project["project"]["readme"], *project["project"]["license-files"]]
    needed.append(project["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["path"])
    needed += project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = [source.strip("/") for _, source in copy_sources(DOCKERFILE.read_text())]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} is not copied"


def test_the_service_template_copies_what_a_service_project_has(tmp_path: Path) -> None:
    (tmp_path / "src" / "wishlist").mkdir(parents=True)
    (tmp_path / "src" / "wishlist" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'wishlist'\nversion = '0.1.0'\n")
    assert _check_sources(TEMPLATE, tmp_path, TEMPLATE_IGNORE) == []


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TEMPLATE], ids=["edgeway", "service-template"])
def test_base_images_are_pinned(dockerfile: Path) -> None:
    bases = base_images(dockerfile.read_text())
    assert bases
    for image in bases:
        assert PINNED.match(image), f"{image}: pin a release tag (x.y.z) or a digest, never latest"


def test_the_third_party_images_are_pinned() -> None:
    for image in (images.NATS, images.NATS_BOX, images.POSTGRES, images.REDIS):
        assert PINNED.match(image), image
    assert not PINNED.match("nats:latest")
    assert not PINNED.match("postgres")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TEMPLATE], ids=["edgeway", "service-template"])
def test_the_final_stage_is_slim_non_root_and_checks_its_health(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    final = stages(text)[-1]
    assert len(stages(text)) >= 3, "multi-stage: a build stage and a runtime stage"
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "-dev", "apk add"):
        assert tool not in runs, f"the runtime stage installs {tool!r}"
    assert "--no-index" in runs, "the runtime stage installs only the wheels built in the first stage"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the runtime stage must switch to a user"
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"USER {users[-1]}: a numeric non-root uid"
    (health,) = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert '"python", "-c"' in health
    assert images.HEALTH_PROBE[2] in health, "the image checks itself the way the compose file does"


def test_the_edgeway_image_builds_the_compiled_wheel() -> None:
    text = DOCKERFILE.read_text()
    build = stages(text)[1]
    runs = [i.args for i in build if i.keyword == "RUN"]
    # what ./dev build runs: mypyc compiles the hot path, in an environment with every extra
    assert any(
        "HATCH_BUILD_HOOK_ENABLE_CUSTOM=1 pip wheel" in run and "--no-build-isolation" in run for run in runs
    )
    assert any("[all]" in run for run in runs)
    assert [i.keyword for i in instructions(text)].count("FROM") == 2
