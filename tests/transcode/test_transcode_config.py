"""The ``transcode`` block and ``grpc`` calls as ``edgeway config check`` reports them: a missing or
unreadable descriptor set, a method or service the set does not hold, a method without rules, a
streaming method, a path parameter that names no field — each at its file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_fixtures import compile_descriptor_set, shelves_descriptor_set
from typer.testing import CliRunner

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.errors import ConfigError
from edgeway.gateway.process.config_cli import app

runner = CliRunner()


def check(tmp_path: Path, transcode: str, path: str = "/v1/**") -> list[str]:
    file = tmp_path / "gw.yaml"
    file.write_text(
        "services:\n"
        "  shelves: {instances: ['http://127.0.0.1:9001']}\n"
        "routes:\n"
        f"  - match: {{path: '{path}'}}\n"
        f"    transcode: {{service: shelves, {transcode}}}\n"
    )
    result = runner.invoke(app, ["check", str(file)])
    return [line.replace(f"{file}:", "") for line in result.output.splitlines()]


def test_a_valid_transcode_route_checks_ok(tmp_path: Path) -> None:
    lines = check(tmp_path, f"descriptor_set: '{shelves_descriptor_set()}'")
    assert lines == [f"ok: {tmp_path / 'gw.yaml'} (1 route, 1 service)"]


def test_a_missing_descriptor_set_is_reported_at_its_key(tmp_path: Path) -> None:
    lines = check(tmp_path, "descriptor_set: absent.pb")
    assert len(lines) == 1
    assert lines[0].startswith(
        "5:35: routes[0].transcode.descriptor_set: descriptor set 'absent.pb' does not exist"
    )
    assert "--descriptor_set_out" in lines[0]


def test_a_descriptor_set_shipped_in_a_python_package_is_named_package_colon(tmp_path: Path) -> None:
    """``package:pkg/file``: wherever the package is installed (the shop's BFFs read its contracts)."""
    shipped = "package:edgeway.demo.shop/shop.pb"
    assert check(tmp_path, f"descriptor_set: '{shipped}', method: shop.inventory.v1.Inventory/Stock") == [
        f"ok: {tmp_path / 'gw.yaml'} (1 route, 1 service)"
    ]
    (missing,) = check(tmp_path, "descriptor_set: 'package:no_such_pkg_here/api.pb', method: a.B/C")
    assert "no Python package 'no_such_pkg_here' is installed" in missing
    (malformed,) = check(tmp_path, "descriptor_set: 'package:api.pb', method: a.B/C")
    assert "write package:<python.package>/<file>" in malformed


def test_a_file_that_is_not_a_descriptor_set_is_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff not protobuf")
    lines = check(tmp_path, f"descriptor_set: '{junk}'")
    assert "routes[0].transcode.descriptor_set:" in lines[0]
    assert "is not a descriptor set" in lines[0]


def test_an_unknown_method_names_the_services_the_set_holds(tmp_path: Path) -> None:
    lines = check(
        tmp_path, f"descriptor_set: '{shelves_descriptor_set()}', method: shelves.v1.Shelves/Nope", "/x"
    )
    assert len(lines) == 1
    assert "routes[0].transcode.method: no method 'shelves.v1.Shelves/Nope'" in lines[0]
    assert "(services: shelves.v1.Shelves)" in lines[0]


def test_a_streaming_method_is_served_by_a_route_but_refused_as_an_aggregate_call(tmp_path: Path) -> None:
    lines = check(
        tmp_path, f"descriptor_set: '{shelves_descriptor_set()}', method: shelves.v1.Shelves/Watch", "/x"
    )
    assert lines == [f"ok: {tmp_path / 'gw.yaml'} (1 route, 1 service)"]
    file = tmp_path / "agg.yaml"
    file.write_text(
        "services:\n"
        "  shelves: {instances: ['http://127.0.0.1:9001']}\n"
        "routes:\n"
        "  - match: {path: /screen}\n"
        "    aggregate:\n"
        "      calls:\n"
        "        counted:\n"
        "          service: shelves\n"
        "          grpc:\n"
        f"            descriptor_set: '{shelves_descriptor_set()}'\n"
        "            method: shelves.v1.Shelves/Watch\n"
    )
    result = runner.invoke(app, ["check", str(file)])
    (line,) = result.output.splitlines()
    assert line.startswith(f"{file}:11:13: ")  # file:line:col of the call's method
    assert "routes[0].aggregate.calls.counted.grpc.method: shelves.v1.Shelves/Watch is a streaming" in line
    assert "a call of an aggregate needs one answer" in line


def test_the_stream_framings_exclude_each_other(tmp_path: Path) -> None:
    both = "print_options: {stream_newline_delimited: true, stream_sse_style_delimited: true}"
    lines = check(tmp_path, f"descriptor_set: '{shelves_descriptor_set()}', {both}")
    assert "routes[0].transcode.print_options:" in lines[0]
    assert "either stream_newline_delimited or stream_sse_style_delimited" in lines[0]


def test_a_client_streaming_rule_without_a_body_is_refused(tmp_path: Path) -> None:
    proto = tmp_path / "up.proto"
    proto.write_text(
        'syntax = "proto3";\npackage up;\nimport "google/api/annotations.proto";\nmessage M {}\n'
        'service S { rpc Up(stream M) returns (M) { option (google.api.http) = {get: "/v1/up"}; } }\n'
    )
    out = compile_descriptor_set(tmp_path, "up.proto", include=tmp_path)
    (line,) = check(tmp_path, f"descriptor_set: '{out}'")
    assert "routes[0].transcode.descriptor_set: up.S.Up streams its requests" in line
    assert "GET /v1/up needs a `body`" in line


def test_a_service_without_annotated_methods_or_unknown_is_reported(tmp_path: Path) -> None:
    lines = check(tmp_path, f"descriptor_set: '{shelves_descriptor_set()}', services: [shelves.v1.Other]")
    assert "routes[0].transcode.services[0]: no service 'shelves.v1.Other'" in lines[0]


def test_a_route_path_parameter_must_name_a_field_of_the_named_method(tmp_path: Path) -> None:
    lines = check(
        tmp_path,
        f"descriptor_set: '{shelves_descriptor_set()}', method: shelves.v1.Shelves/GetShelf",
        "/shelves/{shelf}",
    )
    assert len(lines) == 1
    expected = "path parameter '{shelf}': 'shelf' is not a field of shelves.v1.GetShelfRequest"
    assert f"routes[0].transcode.method: {expected}" in lines[0]


def test_a_set_without_annotations_needs_a_method(tmp_path: Path) -> None:
    bare = tmp_path / "bare.proto"
    bare.write_text(
        'syntax = "proto3";\npackage bare;\nmessage M {}\nservice S { rpc Get(M) returns (M); }\n'
    )
    from grpc_tools import protoc

    out = tmp_path / "bare.pb"
    assert (
        protoc.main(
            ["protoc", f"-I{tmp_path}", "--include_imports", f"--descriptor_set_out={out}", str(bare)]
        )
        == 0
    )
    lines = check(tmp_path, f"descriptor_set: '{out}'")
    assert "routes[0].transcode.descriptor_set: no method in" in lines[0]
    assert "has a google.api.http rule" in lines[0]


def test_validate_config_raises_the_same_issue() -> None:
    cfg = {
        "services": {"shelves": {"instances": ["http://127.0.0.1:9001"]}},
        "routes": [
            {"match": {"path": "/v1/**"}, "transcode": {"service": "shelfs", "descriptor_set": "nope.pb"}}
        ],
    }
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    text = str(caught.value)
    assert "routes[0].transcode.descriptor_set: descriptor set 'nope.pb' does not exist" in text
