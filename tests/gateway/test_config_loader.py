from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgeway.gateway.config import ConfigError, load_config
from edgeway.gateway.core.errors import ConfigIssue

SERVICES = """\
services:
  catalog:
    instances: ["http://127.0.0.1:9001"]
  orders:
    instances: ["http://127.0.0.1:9002"]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues(path: Path, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return list(caught.value.issues)


def test_a_valid_file_loads_with_units_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        SERVICES
        + """\
        limits:
          max_body_bytes: 1MiB
          header_read_timeout: 250ms
        routes:
          - match: {path: /catalog/**, methods: [GET, HEAD]}
            proxy: {service: catalog, strip_prefix: /catalog}
        """.replace("        ", ""),
    )
    cfg = load_config(path, env={})
    assert cfg.limits.max_body_bytes == 1024 * 1024
    assert cfg.limits.header_read_timeout == 0.25
    assert cfg.routes[0].id == "catalog"


def test_every_error_is_reported_with_file_line_column_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        SERVICES
        + """\
        routes:
          - match:
              path: /a/**
            proxy:
              service: catalgo
          - match: {path: /b, methodz: [GET]}
            proxy: {service: orders}
          - match: {path: /c}
            proxy: {service: orders, websocket_idle_timeout: soon}
        """.replace("        ", ""),
    )
    found = issues(path)
    assert [str(i) for i in found] == [
        f"{path}:10:7: routes[0].proxy.service: unknown service 'catalgo' (known: catalog, orders)",
        f"{path}:11:23: routes[1].match.methodz: unknown key 'methodz' "
        "(did you mean 'methods'? allowed: path, methods, hosts)",
        f"{path}:14:30: routes[2].proxy.websocket_idle_timeout: invalid duration 'soon': use a number of "
        "seconds or a number with a unit (ms, s, m, h, d), e.g. 250ms or 2s",
    ]


def test_a_missing_required_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        SERVICES + "routes:\n  - match: {methods: [GET]}\n    proxy: {service: catalog}\n",
    )
    [issue] = issues(path)
    assert (issue.line, issue.column, issue.key_path) == (7, 5, "routes[0].match.path")
    assert issue.message == "required key 'path' is missing"
    # A proxy needs a service or a split: said in those words, at the same place.
    path = write(
        tmp_path, "gw.yaml", SERVICES + "routes:\n  - match: {path: /x}\n    proxy: {websocket: true}\n"
    )
    [issue] = issues(path)
    assert (issue.line, issue.column, issue.key_path) == (8, 5, "routes[0].proxy.service")
    assert issue.message == "a proxy needs a `service` (or a `split` between services)"


def test_env_interpolation_with_defaults_escapes_and_retyping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        SERVICES
        + """\
        name: "${NAME:-edge}-$${literal}"
        listen:
          port: ${PORT}
        admin: ${ADMIN:-null}
        workers: ${WORKERS:-2}
        access_log:
          enabled: ${LOG:-false}
        """.replace("        ", ""),
    )
    cfg = load_config(path, env={"PORT": "9100", "NAME": ""})
    assert cfg.name == "edge-${literal}"
    assert cfg.listen.port == 9100
    assert cfg.admin is None
    assert cfg.workers == 2
    assert cfg.access_log.enabled is False


def test_quoted_interpolation_stays_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", 'listen:\n  port: "${PORT}"\n')
    [issue] = issues(path, env={"PORT": "9100"})
    assert issue.key_path == "listen.port"
    assert (issue.line, issue.column) == (2, 3)


def test_every_unset_variable_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "name: ${A}\nlisten:\n  host: ${B}\n  port: ${C:-80}\n")
    found = issues(path)
    assert [(i.line, i.key_path) for i in found] == [(1, "name"), (3, "listen.host")]
    assert "environment variable 'A' is not set" in found[0].message
    assert "${A:-default}" in found[0].message


def test_malformed_references_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", 'name: "${1BAD}"\nlisten: {host: "${OPEN"}\n')
    messages = [i.message for i in issues(path)]
    assert "is not a variable reference" in messages[0]
    assert "unterminated" in messages[1]


def test_yaml_syntax_errors_become_issues_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "name: gw\nlisten:\n  host: a: b\n")
    [issue] = issues(path)
    assert (issue.line, issue.column) == (3, 10)
    assert issue.message.startswith("YAML syntax error:")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "name: a\nworkers: 1\nname: b\n")
    [issue] = issues(path)
    assert (issue.line, issue.key_path) == (3, "name")
    assert "first at line 1" in issue.message


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "- a\n- b\n")
    assert "must be a mapping" in issues(path)[0].message


def test_an_empty_file_is_a_gateway_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "gw.yaml", ""), env={})
    assert cfg.routes == []


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    [issue] = issues(tmp_path / "nope.yaml")
    assert "cannot read the config file" in issue.message


def test_includes_merge_maps_concatenate_routes_and_the_includer_wins(tmp_path: Path) -> None:
    write(
        tmp_path,
        "conf/services.yaml",
        SERVICES + "name: from-include\nlimits: {max_headers: 50, max_url_bytes: 1000}\n",
    )
    write(
        tmp_path,
        "conf/routes.yaml",
        "routes:\n  - id: inc\n    match: {path: /inc}\n    proxy: {service: orders}\n",
    )
    main = write(
        tmp_path,
        "gw.yaml",
        """\
        include: [conf/services.yaml, conf/routes.yaml]
        name: main
        limits: {max_headers: 70}
        routes:
          - id: own
            match: {path: /own}
            proxy: {service: catalog}
        """,
    )
    cfg = load_config(main, env={})
    assert cfg.name == "main"
    assert (cfg.limits.max_headers, cfg.limits.max_url_bytes) == (70, 1000)
    assert [r.id for r in cfg.routes] == ["inc", "own"]
    assert cfg.include == ["conf/services.yaml", "conf/routes.yaml"]


def test_errors_in_included_files_name_that_file_and_its_own_indices(tmp_path: Path) -> None:
    write(tmp_path, "routes.yaml", "routes:\n  - match: {path: /x}\n    proxy: {service: nope}\n")
    main = write(
        tmp_path,
        "gw.yaml",
        SERVICES + "include: [routes.yaml]\nroutes:\n  - match: {path: /y}\n    proxy: {service: catalog}\n",
    )
    [issue] = issues(main)
    assert issue.file == str(tmp_path / "routes.yaml")
    assert (issue.line, issue.key_path) == (3, "routes[0].proxy.service")


def test_include_cycles_are_detected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: [b.yaml]\n")
    write(tmp_path, "b.yaml", "include: [a.yaml]\n")
    [issue] = issues(tmp_path / "a.yaml")
    assert issue.message == "include cycle: a.yaml -> b.yaml -> a.yaml"
    assert issue.file == str(tmp_path / "b.yaml")


def test_a_missing_include_points_at_the_include_entry(tmp_path: Path) -> None:
    main = write(tmp_path, "gw.yaml", "include:\n  - ok.yaml\n  - missing.yaml\n")
    write(tmp_path, "ok.yaml", "name: ok\n")
    [issue] = issues(main)
    assert (issue.line, issue.column) == (3, 5)
    assert "cannot read included file" in issue.message


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        """\
        services:
          a:
            instances: ["http://h:1"]
            timeouts: &slow {connect: 1s, first_byte: 20s, total: 60s}
          b:
            instances: ["http://h:2"]
            timeouts:
              <<: *slow
              total: 90s
        """,
    )
    cfg = load_config(path, env={})
    assert cfg.services["a"].timeouts.total == 60.0
    assert (cfg.services["b"].timeouts.first_byte, cfg.services["b"].timeouts.total) == (20.0, 90.0)


def test_the_config_error_prints_one_line_per_issue(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "workers: 0\nlisten: {port: -1}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    text = str(caught.value)
    assert text.splitlines() == [
        f"{path}:1:1: workers: Input should be greater than or equal to 1",
        f"{path}:2:10: listen.port: Input should be greater than or equal to 0",
    ]
