"""``edgeway proto compile``: .proto files into typed modules, the committed ones checked current,
protoc's errors naming file:line:col."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeway.cli import build_app

SERVICE_TESTS = Path(__file__).resolve().parent
runner = CliRunner()


def proto(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app("proto"), ["proto", *args])
    return result.exit_code, result.output


def test_the_committed_test_protos_are_current() -> None:
    code, output = proto("compile", str(SERVICE_TESTS / "protos"), "--out", str(SERVICE_TESTS), "--check")
    assert code == 0, output
    assert "is current" in output


def test_the_shops_committed_contracts_are_current() -> None:
    shop = SERVICE_TESTS.parents[1] / "src" / "edgeway" / "demo" / "shop"
    assert (shop / "inventory" / "v1" / "inventory_pb2_grpc.py").is_file()
    assert (shop / "catalog" / "v1" / "catalog_pb2_grpc.py").is_file()
    descriptors = shop / "shop.pb"  # every contract of the shop, what its BFFs' routes name
    code, output = proto("compile", str(shop.parents[2]), "--descriptor-set", str(descriptors), "--check")
    assert code == 0, output
    assert "is current" in output


def test_a_descriptor_set_written_beside_the_code_is_checked_like_it(tmp_path: Path) -> None:
    """The set the gateway reads is regenerated with the code: a stale one fails --check."""
    shop = SERVICE_TESTS.parents[1] / "src" / "edgeway" / "demo" / "shop"
    stale = tmp_path / "shop.pb"
    stale.write_bytes(b"")
    code, output = proto("compile", str(shop.parents[2]), "--descriptor-set", str(stale), "--check")
    assert code == 1
    assert f"stale: {stale}" in output
    assert "--descriptor-set" in output


def test_a_proto_compiles_into_importable_typed_modules_and_a_change_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "protos" / "shopx" / "v1"
    source.mkdir(parents=True)
    (source / "prices.proto").write_text(
        'syntax = "proto3";\npackage shopx.v1;\n'
        "service Prices { rpc Quote(QuoteRequest) returns (QuoteReply) "
        "{ option idempotency_level = NO_SIDE_EFFECTS; } }\n"
        "message QuoteRequest { string sku = 1; }\nmessage QuoteReply { int64 cents = 1; }\n"
    )
    out = tmp_path / "gen"
    code, output = proto("compile", str(tmp_path / "protos"), "--out", str(out))
    assert code == 0, output
    generated = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert generated == [
        "shopx/__init__.py",
        "shopx/v1/__init__.py",
        "shopx/v1/prices_pb2.py",
        "shopx/v1/prices_pb2.pyi",
        "shopx/v1/prices_pb2_grpc.py",
        "shopx/v1/prices_pb2_grpc.pyi",
    ]
    assert "class PricesAsyncStub" in (out / "shopx/v1/prices_pb2_grpc.pyi").read_text()
    monkeypatch.syspath_prepend(str(out))
    grpc_module = importlib.import_module("shopx.v1.prices_pb2_grpc")
    assert hasattr(grpc_module, "add_PricesServicer_to_server")
    sys.modules.pop("shopx.v1.prices_pb2_grpc")
    assert proto("compile", str(tmp_path / "protos"), "--out", str(out), "--check")[0] == 0
    (source / "prices.proto").write_text((source / "prices.proto").read_text() + "message Extra {}\n")
    code, output = proto("compile", str(tmp_path / "protos"), "--out", str(out), "--check")
    assert code == 1
    assert "stale: " in output
    assert "prices_pb2.py" in output


def test_protoc_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage Broken {\n  strin name = 1;\n}\n')
    code, output = proto("compile", str(tmp_path))
    assert code == 2
    assert "broken.proto:3:3" in output
    code, output = proto("compile", str(tmp_path / "nothing-here"))
    assert code == 2
    assert "is not a directory of .proto files" in output
