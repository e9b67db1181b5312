from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgeway.gateway.config.reference import render_reference
from edgeway.gateway.process.config_cli import app

runner = CliRunner()

GOOD = """\
services:
  catalog: {instances: ["http://127.0.0.1:9001"]}
routes:
  - match: {path: /catalog/**}
    proxy: {service: catalog}
  - match: {path: /health}
    proxy: {service: catalog}
"""

THREE_ERRORS = """\
services:
  catalog:
    instances: ["tcp://127.0.0.1:9001"]
routes:
  - match: {path: /catalog/**}
    proxy: {service: catalgo}
  - match: {path: /x/**/y}
    proxy: {service: catalog}
"""


def test_check_prints_ok_with_counts(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"ok: {path} (2 routes, 1 service)\n"


def test_check_prints_every_issue_with_its_line_and_exits_1(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(THREE_ERRORS)
    result = runner.invoke(app, ["check", str(bad), str(good)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(
        f"{bad}:3:17: services.catalog.instances[0]: instance 'tcp://127.0.0.1:9001' must be an http:// or "
        "https:// URL"
    )
    assert lines[1] == f"{bad}:6:13: routes[0].proxy.service: unknown service 'catalgo' (known: catalog)"
    assert (
        lines[2]
        == f"{bad}:7:13: routes[1].match.path: path pattern '/x/**/y': '**' may only be the last segment"
    )
    assert lines[3] == f"ok: {good} (2 routes, 1 service)"


def test_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert "cannot read the config file" in result.output


def test_schema_prints_a_json_schema_editors_can_use(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert {"listen", "services", "routes"} <= set(schema["properties"])
    assert schema["$defs"]["Limits"]["properties"]["keepalive_timeout"]["x-edgeway-unit"] == "duration"
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["schema", "--output", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == schema


def test_the_committed_config_reference_is_up_to_date() -> None:
    committed = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
    assert committed.read_text(encoding="utf-8") == render_reference(), (
        "docs/config-reference.md is stale: run .venv/bin/python scripts/gen_config_reference.py"
    )


def test_the_example_in_the_configuration_guide_is_valid(tmp_path: Path) -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "gw.yaml"
    path.write_text(example)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
