"""The template and dotted-path language of aggregate calls, and reading values by path."""

from __future__ import annotations

import pytest

from edgeway.gateway.actions.aggregate.templates import STAR, TemplateError, parse_steps, parse_template
from edgeway.gateway.actions.aggregate.values import MISSING, as_text, lookup


def test_dotted_paths_parse_keys_positions_and_wildcards() -> None:
    assert parse_steps("a.b[0].c[*]") == ("a", "b", 0, "c", STAR)
    assert parse_steps("items[*].product-id") == ("items", STAR, "product-id")
    assert parse_steps("[2]") == (2,)
    assert parse_steps("") == ()


@pytest.mark.parametrize("bad", ["a..b", "a[x]", "a.", "a[1", ".a", "a b"])
def test_malformed_dotted_paths_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_steps(bad)


def test_a_template_splits_literals_and_references() -> None:
    template = parse_template("/users/{calls.order.customer.id}/orders?page={query.page}")
    refs = template.refs
    assert [r.source for r in refs] == ["calls", "query"]
    assert refs[0].name == "order"
    assert refs[0].steps == ("customer", "id")
    assert refs[1].name == "page"
    assert template.whole is None
    whole = parse_template("{calls.order.items[*].sku}").whole
    assert whole is not None
    assert whole.fans_out


def test_doubled_braces_are_literal_braces() -> None:
    template = parse_template("{{not a ref}} {path.id}")
    assert template.parts[0] == "{not a ref} "
    assert template.refs[0].name == "id"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/x/{id}", "a path parameter is written '{path.id}'"),
        ("{nowhere.x}", "a reference starts with one of"),
        ("{calls}", "needs a name"),
        ("{calls.1x}", "does not start with a call name"),
        ("{query.a.b}", "has no fields"),
        ("{batch.x}", "write '{batch}'"),
        ("/x/{path.id", "without a closing"),
        ("/x/}", "without an opening"),
        ("{a{b}}", "do not nest"),
    ],
)
def test_template_errors_say_how_to_write_it(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert message in str(caught.value)


def test_lookup_walks_objects_and_lists_and_tells_missing_from_null() -> None:
    value = {"a": {"b": [10, {"c": None}]}}
    assert lookup(value, ("a", "b", 0)) == 10
    assert lookup(value, ("a", "b", 1, "c")) is None
    assert lookup(value, ("a", "x")) is MISSING
    assert lookup(value, ("a", "b", 5)) is MISSING
    assert lookup(value, ("a", "b", "c")) is MISSING  # a key into a list


def test_a_wildcard_collects_every_match_and_skips_elements_without_it() -> None:
    order = {"items": [{"sku": "a", "tags": ["x"]}, {"qty": 1}, {"sku": "b", "tags": ["y", "z"]}]}
    assert lookup(order, ("items", STAR, "sku")) == ["a", "b"]
    # Nested wildcards flatten into one list.
    assert lookup(order, ("items", STAR, "tags", STAR)) == ["x", "y", "z"]
    assert lookup(order, ("items", STAR)) == order["items"]
    assert lookup({"items": 3}, ("items", STAR)) is MISSING


def test_values_become_text_as_json_literals_and_joined_lists() -> None:
    assert as_text("ab") == "ab"
    assert as_text(7) == "7"
    assert as_text(2.5) == "2.5"
    assert as_text(True) == "true"
    assert as_text(None) == "null"
    assert as_text([1, "b", 3], "|") == "1|b|3"
    assert as_text({"k": 1}) == '{"k":1}'
