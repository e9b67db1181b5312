"""Every example in README.md and docs/ works as written, so the docs cannot drift from the code.

Each fenced block is checked by its language:

- ``yaml``: parses; a gateway config (top-level keys of the gateway's config) goes through
  ``load_config`` — what ``edgeway config check`` runs — after the parts an example leaves out
  are filled in: a ``name`` and ``listen`` when absent, one placeholder instance for each
  service its routes name but do not define, and the certificate, key and CA files of
  ``listen.tls`` (made for the example's names by a throwaway CA). A security service settings
  file is validated by ``SecuritySettings``, a seed file (roles, policies, users, clients) by
  the seed loader and the models the service creates its entries with; a system file
  (top-level ``system``) by ``load_system``. ``${VAR}`` without a default gets a placeholder.
- ``json``: parses.
- ``python``: compiles, and every name it imports from ``edgeway`` exists.
- ``sh``/``bash``/``console``: every ``edgeway ...`` or ``./dev ...`` command names a command
  that exists and only options that command has (``./dev bench ...`` and ``python -m bench ...``
  are the benchmarks' own command, ``bench.cli``).

A block that is deliberately partial (a fragment of a larger file, ``...`` in place of values)
or in another tool's format is marked with an HTML comment on the line before its fence —
``<!-- snippet -->`` or ``<!-- snippet: why -->`` — and is not checked. Anything else that does
not fit a rule above fails: either the example is wrong, or it needs the marker.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*snippet\b[^>]*-->\s*\Z")
CHECKED = {"yaml", "json", "python", "sh", "bash", "console"}
# ./dev commands that are the checkout's own (not edgeway commands)
DEV_ONLY = {"test", "test-compiled", "build", "help"}
VARIABLE = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Example:
    file: Path
    line: int
    lang: str
    body: str
    snippet: bool

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def examples() -> Iterator[Example]:
    for file in DOCS:
        text = file.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip()
            last_line = before.rsplit("\n", 1)[-1]
            yield Example(
                file,
                text.count("\n", 0, m.start()) + 1,
                m.group("lang").lower(),
                m.group("body"),
                bool(MARKER.search(last_line)),
            )


ALL = [e for e in examples() if e.lang in CHECKED and not e.snippet]


def test_examples_are_found_and_every_marker_precedes_a_block() -> None:
    assert len(ALL) > 50
    for file in DOCS:
        lines = file.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if MARKER.search(line):
                following = next((x for x in lines[i + 1 :] if x.strip()), "")
                assert following.startswith("```"), f"{file.name}:{i + 1}: a snippet marker with no block"


# -- YAML ------------------------------------------------------------------------------------------


def _gateway_fields() -> set[str]:
    from edgeway.gateway.config.schema import GatewayConfig

    return set(GatewayConfig.model_fields)


def _named_services(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "service" and isinstance(value, str):
                found.add(value)
            else:
                found |= _named_services(value)
    elif isinstance(node, list):
        for item in node:
            found |= _named_services(item)
    return found


def _placeholder_env(text: str) -> dict[str, str]:
    return dict.fromkeys(VARIABLE.findall(text), "example-value-0123456789")  # long enough for a secret


def _with_certificates(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A config whose ``listen.tls`` names certificate, key and CA files (paths on the reader's
    machine) with files made for it here: certificates for the example's ``names`` (or a name
    of their own) from a throwaway CA, so the rest of the example is checked as written."""
    listen = config.get("listen")
    if not isinstance(listen, dict) or not isinstance(tls := listen.get("tls"), dict):
        return config
    from edgeway.pki.local_ca import LocalCA

    ca = LocalCA.create(constrained=False)
    certificates = []
    for index, entry in enumerate(tls.get("certificates") or []):
        names = entry.get("names") or [f"docs-{index}.example"]
        cert, key = tmp_path / f"cert-{index}.pem", tmp_path / f"cert-{index}.key"
        ca.issue([str(name) for name in names]).write(cert, key)
        certificates.append({**entry, "cert": str(cert), "key": str(key)})
    tls = {**tls, "certificates": certificates}
    if isinstance(tls.get("client_certificates"), dict):
        ca_file, _ = ca.write(tmp_path / "clients")
        tls["client_certificates"] = {**tls["client_certificates"], "ca": str(ca_file)}
    return {**config, "listen": {**listen, "tls": tls}}


def check_gateway(example: Example, data: dict[str, Any], tmp_path: Path) -> None:
    from edgeway.gateway.config import ConfigError, load_config

    config = _with_certificates(dict(data), tmp_path)
    config.setdefault("name", "docs-example")
    config.setdefault("listen", {"host": "127.0.0.1", "port": 8080})
    services = dict(config.get("services") or {})
    for name in sorted(_named_services(config.get("routes") or []) - set(services)):
        services[name] = {"instances": ["http://127.0.0.1:9"]}
    if services:
        config["services"] = services
    path = tmp_path / "gateway.yaml"
    if config == data:
        path.write_text(example.body)  # verbatim: line numbers in errors point into the example
    else:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        load_config(path, env=_placeholder_env(example.body))
    except ConfigError as exc:
        issues = "\n".join(str(issue) for issue in exc.issues)
        pytest.fail(f"{example.where}: the gateway config example is refused:\n{issues}")


def check_security_settings(example: Example, data: dict[str, Any]) -> None:
    from edgeway.security_service.settings import SecuritySettings

    SecuritySettings(**data)


def check_seed(example: Example, tmp_path: Path) -> None:
    from edgeway.security_service.admin import ClientIn, UserIn
    from edgeway.security_service.seed import load_seed

    path = tmp_path / "seed.yaml"
    path.write_text(example.body)
    data = load_seed(path, env=_placeholder_env(example.body))
    for user in data.get("users") or []:
        UserIn(**user)
    for client in data.get("clients") or []:
        ClientIn(**client)


def check_system(example: Example, data: dict[str, Any], tmp_path: Path) -> None:
    """A system file goes through ``load_system`` (``edgeway system check``), with an empty file
    at each edge config path it names and a folder at each service ``path``."""
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.system import load_system

    for edge in (data.get("edges") or {}).values():
        if isinstance(edge, dict) and isinstance(edge.get("config"), str):
            target = tmp_path / edge["config"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")
    for service in (data.get("services") or {}).values():
        if isinstance(service, dict) and isinstance(service.get("path"), str):
            (tmp_path / service["path"]).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "edgeway.system.yaml"
    path.write_text(example.body)
    try:
        load_system(path, env=_placeholder_env(example.body))
    except ConfigError as exc:
        pytest.fail(f"{example.where}: invalid system file:\n{exc}")


def check_yaml(example: Example, tmp_path: Path) -> None:
    try:
        data = yaml.safe_load(example.body)
    except yaml.YAMLError as exc:
        pytest.fail(f"{example.where}: not valid YAML: {exc}")
    keys = set(data) if isinstance(data, dict) else set()
    from edgeway.security_service.settings import SecuritySettings

    if keys and keys <= _gateway_fields():
        check_gateway(example, data, tmp_path)
    elif keys and keys <= set(SecuritySettings.model_fields):
        check_security_settings(example, data)
    elif keys and keys <= {"scopes", "roles", "users", "clients", "policies"}:
        check_seed(example, tmp_path)
    elif "system" in keys:
        check_system(example, data, tmp_path)
    else:
        pytest.fail(
            f"{example.where}: YAML that is neither a gateway config, security settings, a seed nor a "
            "system file "
            f"(top-level keys {sorted(keys)}): fix it, or mark a partial or foreign block <!-- snippet -->"
        )


# -- Python ----------------------------------------------------------------------------------------


def check_python(example: Example) -> None:
    try:
        tree = ast.parse(example.body, example.where)
    except SyntaxError as exc:
        pytest.fail(f"{example.where}: does not compile: {exc}")
    # Top-level `await` as in `python -m asyncio`: examples show calls, not their event loop.
    compile(tree, example.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "edgeway":
                    importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgeway":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ModuleNotFoundError:
                        missing = f"from {node.module} import {alias.name}"
                        pytest.fail(f"{example.where}: `{missing}`: no such name")


# -- shell -----------------------------------------------------------------------------------------


def _commands(body: str) -> Iterator[list[str]]:
    """The edgeway commands of a shell block, as words (``./dev X`` read as ``edgeway X``; the
    benchmarks, ``./dev bench X`` and ``python -m bench X``, as ``bench X``)."""
    text = re.sub(r"\\\n", " ", body)
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        elif raw.startswith(("ok:", " ")) and not line.startswith(("edgeway", "./dev")):
            continue
        line = re.sub(r"(^|\s)#.*$", "", line)
        for part in re.split(r"&&|\|\||;|\||&|\$\(|\)", line):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value before a command
                words = words[1:]
            if not words:
                continue
            if words[0] == "./dev":
                if len(words) < 2 or words[1] in DEV_ONLY:
                    continue
                yield ["bench", *words[2:]] if words[1] == "bench" else ["edgeway", *words[1:]]
            elif words[:3] == ["python", "-m", "bench"]:
                yield ["bench", *words[3:]]
            elif words[0] == "edgeway":
                yield words


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's commands (typer has its own copy of click: duck-typed)."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def check_command(example: Example, words: list[str]) -> None:
    from bench.cli import app as bench_app
    from edgeway.cli import build_app

    command: Any = typer.main.get_command(bench_app if words[0] == "bench" else build_app())
    path = [words[0]]
    rest = words[1:]
    shown = " ".join(words)
    while (group := _subcommands(command)) is not None and rest and not rest[0].startswith("-"):
        assert rest[0] in group, f"{example.where}: `{shown}`: {' '.join(path)} has no command {rest[0]!r}"
        command, path, rest = group[rest[0]], [*path, rest[0]], rest[1:]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help"}
    for word in rest:
        option = word.strip("[]").split("=", 1)[0]
        if option.startswith("--") or re.fullmatch(r"-\w", option):
            assert option in known, f"{example.where}: `{shown}`: {' '.join(path)} has no option {option}"


@pytest.mark.parametrize("example", ALL, ids=lambda e: f"{e.where}-{e.lang}")
def test_example(example: Example, tmp_path: Path) -> None:
    if example.lang == "yaml":
        check_yaml(example, tmp_path)
    elif example.lang == "json":
        try:
            json.loads(example.body)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{example.where}: not valid JSON: {exc}")
    elif example.lang == "python":
        check_python(example)
    else:
        for words in _commands(example.body):
            check_command(example, words)


def test_the_checks_refuse_what_a_reader_could_not_run(tmp_path: Path) -> None:
    def example(lang: str, body: str) -> Example:
        return Example(ROOT / "docs" / "x.md", 1, lang, body, False)

    with pytest.raises(AssertionError, match="has no command 'comparee'"):
        check_command(example("sh", ""), ["edgeway", "demo", "comparee"])
    with pytest.raises(AssertionError, match="has no option --rtt"):
        check_command(example("sh", ""), ["edgeway", "demo", "compare", "--rtt", "5"])
    assert list(_commands("./dev demo flag x on   # c\nTOKEN=$(edgeway version)\n./dev test\n")) == [
        ["edgeway", "demo", "flag", "x", "on"],
        ["edgeway", "version"],
    ]
    assert list(_commands("./dev bench proxy --json\npython -m bench slow\n")) == [
        ["bench", "proxy", "--json"],
        ["bench", "slow"],
    ]
    with pytest.raises(AssertionError, match="has no option --jsn"):
        check_command(example("sh", ""), ["bench", "proxy", "--jsn"])
    with pytest.raises(pytest.fail.Exception, match="not valid YAML"):
        check_yaml(example("yaml", "routes:\n  - match: {path: /u/{user}}\n"), tmp_path)
    with pytest.raises(pytest.fail.Exception, match="connect"):
        check_yaml(
            example(
                "yaml", "services:\n  a: {instances: [http://h:1], timeouts: {connect: 2s, total: 1s}}\n"
            ),
            tmp_path,
        )
    with pytest.raises(pytest.fail.Exception, match="no such name"):
        check_python(example("python", "from edgeway.service import no_such_thing\n"))
