"""How ``edgeway new`` edits files that are the user's: the system file's sections and an edge's
``include`` list, as text, every other byte kept; what it cannot place safely it refuses. And on
a hand-written system (a copy of the shop's), a scaffolded service's entry and routes go in with
the file's comments and layout untouched."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeway.cli import build_app
from edgeway.demo.plan import SYSTEM_FILE
from edgeway.gateway.config import load_config
from edgeway.scaffold.system_file import default_text, system_name_for
from edgeway.scaffold.yaml_edit import YamlEditError, add_to_mapping, add_to_sequence
from edgeway.system import load_system

ENTRY = ["wishlist:", "  module: wishlist", "  port: 8009"]

SYSTEM = """\
# head
system: x
services:
  a:
    port: 1   # a's port
    health: {ready: /r, live: /l}
  # b is next
  b:
    port: 2
    after:
      - a

  # a comment about the edges, not about b
edges: {}   # none yet
"""


def test_an_entry_goes_after_the_last_line_of_the_last_one_indented_like_them() -> None:
    edited = add_to_mapping(SYSTEM, "services", ENTRY)
    assert edited == SYSTEM.replace(
        "      - a\n", "      - a\n  wishlist:\n    module: wishlist\n    port: 8009\n"
    )
    four = SYSTEM.replace("\n  ", "\n    ")  # entries indented by four
    assert "\n    wishlist:\n      module: wishlist\n" in add_to_mapping(four, "services", ENTRY)


def test_comments_inside_the_last_entry_stay_with_it() -> None:
    text = "services:\n  a:\n    port: 1\n    # instances: 2\n  # b: later\n\nedges: {}\n"
    assert add_to_mapping(text, "services", ENTRY[:1]) == text.replace(
        "    # instances: 2\n", "    # instances: 2\n  wishlist:\n"
    )


def test_an_empty_section_becomes_a_block_and_a_missing_one_is_appended() -> None:
    edited = add_to_mapping(SYSTEM, "edges", ENTRY)
    assert edited == SYSTEM.replace(
        "edges: {}   # none yet\n", "edges:   # none yet\n  wishlist:\n    module: wishlist\n    port: 8009\n"
    )
    assert add_to_mapping("services:\nedges: {}\n", "services", ENTRY) == (
        "services:\n  wishlist:\n    module: wishlist\n    port: 8009\nedges: {}\n"
    )
    assert add_to_mapping("system: x\nservices: ~", "services", ENTRY[:1]) == (
        "system: x\nservices:\n  wishlist:\n"
    )
    assert add_to_mapping("system: x\n", "edges", ENTRY[:1]) == "system: x\n\nedges:\n  wishlist:\n"
    # Windows line ends stay Windows line ends
    assert add_to_mapping("system: x\r\nservices: {}\r\n", "services", ENTRY[:1]) == (
        "system: x\r\nservices:\r\n  wishlist:\r\n"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("services: {a: {port: 1}}\n", "is not a block mapping edgeway new can add to"),
        ("services: [a]\n", "is not a block mapping edgeway new can add to"),
        ("services: {\n  }\n", "is written over several lines"),
        ("- a\n", "its top level is not a mapping"),
        ("services: [\n", "it is not valid YAML"),
    ],
)
def test_what_cannot_be_placed_safely_is_refused(text: str, why: str) -> None:
    with pytest.raises(YamlEditError, match=why):
        add_to_mapping(text, "services", ENTRY)


def test_an_include_goes_inside_a_one_line_list_or_under_a_block_one() -> None:
    assert add_to_sequence("include: []  # routes\nname: e\n", "include", "r/a.yaml") == (
        "include: [r/a.yaml]  # routes\nname: e\n"
    )
    assert add_to_sequence("include: [x.yaml, 'y z.yaml' ]\n", "include", "r/a.yaml") == (
        "include: [x.yaml, 'y z.yaml', r/a.yaml]\n"
    )
    block = "include:\n  -  x.yaml   # ours\n  - y.yaml\n# routes follow\nroutes: []\n"
    assert add_to_sequence(block, "include", "r/a.yaml") == block.replace(
        "  - y.yaml\n", "  - y.yaml\n  - r/a.yaml\n"
    )
    # none yet: before the first key, after the comments that open the file
    assert add_to_sequence("# my edge\n\nname: e\n", "include", "r/a.yaml") == (
        "# my edge\n\ninclude: [r/a.yaml]\nname: e\n"
    )
    for text, why in (
        ("include: x.yaml\n", "is not a list"),
        ("include: [x.yaml,\n  y.yaml]\n", "written over several lines"),
    ):
        with pytest.raises(YamlEditError, match=why):
            add_to_sequence(text, "include", "r/a.yaml")


def test_a_system_file_with_problems_is_not_added_to(tmp_path: Path) -> None:
    system = tmp_path / "edgeway.system.yaml"
    system.write_text("system: x\nservices:\n  a: {module: a, port: 99999}\n")
    result = CliRunner().invoke(build_app("new"), ["new", "service", "stock", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{system} has problems; fix them first (edgeway system check {system})" in result.output
    assert f"{system}:3:" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeway.system.yaml"]


def test_a_new_system_is_named_after_its_folder_and_checks(tmp_path: Path) -> None:
    assert system_name_for(Path("/work/My Shop_2")) == "my-shop-2"
    assert system_name_for(Path("/work/2024")) == "system-2024"
    assert system_name_for(Path("/work/" + "a" * 60)) == "a" * 40
    assert system_name_for(Path("/")) == "system"
    (tmp_path / "edgeway.system.yaml").write_text(default_text("my-shop"))
    system = load_system(tmp_path / "edgeway.system.yaml", env={}).model
    assert (system.system, system.prefix, system.pattern) == ("my-shop", "MY_SHOP", "all")
    assert (system.services, system.edges) == ({}, {})
    # one machine: the embedded NATS, no stores (SQLite files)
    assert (system.broker.nats.external_url, system.broker.nats.port) == (None, 14222)
    assert (system.stores.postgres, system.stores.redis) == (None, None)


def test_a_hand_written_system_keeps_every_line_and_its_edges_include_the_new_routes(
    tmp_path: Path,
) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SYSTEM_FILE.parent / "edges", shop / "edges")
    shutil.copy(SYSTEM_FILE, shop / "edgeway.system.yaml")
    before = (shop / "edgeway.system.yaml").read_text()
    edges_before = {p.name: p.read_text() for p in (shop / "edges").glob("*.yaml")}

    result = CliRunner().invoke(build_app("new"), ["new", "service", "wishlist", "--dir", str(shop)])
    assert result.exit_code == 0, result.output

    after = (shop / "edgeway.system.yaml").read_text()
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    changes = [op for op in difflib.SequenceMatcher(None, old, new).get_opcodes() if op[0] != "equal"]
    assert [op[0] for op in changes] == ["insert"]  # nothing else of the file moved
    _, at, _, start, end = changes[0]
    assert "".join(new[start:end]) == (
        "  wishlist:\n    module: wishlist\n    path: services/wishlist\n"
        "    image: shop/wishlist:0.1.0\n    port: 8001\n    database: wishlist\n"
    )
    # after web's last line (its resources), before the blank line and `edges:`
    assert (old[at - 1], old[at], old[at + 1]) == (
        "      limits: {cpu: 500m, memory: 256Mi}\n",
        "\n",
        "edges:\n",
    )
    system = load_system(shop / "edgeway.system.yaml").model
    assert system.services["wishlist"].port == 8001

    # each edge includes it now (theirs are one-line flow lists), and still loads
    for edge in ("gateway", "web-bff", "mobile-bff"):
        assert f"included in edge {edge!r}: routes/wishlist.yaml" in result.output
        config = shop / "edges" / f"{edge}.yaml"
        lines = list(difflib.ndiff(edges_before[config.name].splitlines(), config.read_text().splitlines()))
        removed, added = [[line[2:] for line in lines if line.startswith(sign)] for sign in ("- ", "+ ")]
        (include,) = removed  # one line changed: the include list, the file added at its end
        assert added == [include.replace("]", ", routes/wishlist.yaml]")], added
        env = {"SHOP_STRANGLER_FILE": str(shop / "edges/strangler.yaml")}
        assert "wishlist" in load_config(config, env).services


def test_an_edge_that_cannot_take_the_routes_safely_is_left_as_it_was(tmp_path: Path) -> None:
    def new(*args: str) -> str:
        result = CliRunner().invoke(build_app("new"), ["new", *args, "--dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        return result.output

    new("gateway", "one")
    new("gateway", "two")
    one, two = (tmp_path / "edges" / name / "gateway.yaml" for name in ("one", "two"))
    one.write_text(one.read_text().replace("include: []", "include: [\n  ]"))
    two.write_text(
        two.read_text().replace(
            "routes: []",
            'services:\n  other: {instances: ["http://127.0.0.1:9"]}\n'
            "routes:\n  - id: stock-items\n    match: {path: /s}\n    proxy: {service: other}",
        )
    )
    before = one.read_text(), two.read_text()
    said = new("service", "stock")
    assert (one.read_text(), two.read_text()) == before
    assert f"add '../routes/stock.yaml' to the include list of {one} (`include` (line " in said
    assert "is a list written over several lines)" in said
    assert f"add '../routes/stock.yaml' to the include list of {two} (with the routes included" in said
    assert "stock-items" in said
    # the service itself is made and in the system file
    assert "stock" in load_system(tmp_path / "edgeway.system.yaml").model.services
