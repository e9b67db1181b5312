"""Response shaping (unwrap, allow, deny, rename, collections) and the merge rules, each rule on
its own; the end-to-end tests show them through the gateway."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgeway.gateway.actions.aggregate.merge import compile_merge, deep_merge
from edgeway.gateway.actions.aggregate.plan import compile_plan
from edgeway.gateway.actions.aggregate.shaping import ShapeError, compile_shaper
from edgeway.gateway.actions.aggregate.templates import parse_steps
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.runtime import make_clusters

ORDER = {
    "id": 7,
    "status": "paid",
    "internal": {"cost": 3, "margin": 1},
    "customer": {"id": 3, "name": "Ada", "email": "ada@example.com"},
    "items": [
        {"sku": "a", "qty": 1, "price": 10, "supplier": "s1"},
        {"sku": "b", "qty": 2, "price": 5, "supplier": "s2"},
    ],
}


def shaper(
    *,
    unwrap: str | None = None,
    allow: list[str] | None = None,
    deny: list[str] | None = None,
    rename: dict[str, str] | None = None,
    collection: bool = False,
    needs_object: bool = True,
) -> Any:
    return compile_shaper(
        unwrap=parse_steps(unwrap) if unwrap else None,
        allow=tuple(parse_steps(p) for p in allow) if allow is not None else None,
        deny=tuple(parse_steps(p) for p in deny or ()),
        rename=tuple((parse_steps(k), v) for k, v in (rename or {}).items()),
        collection=collection,
        needs_object=needs_object,
    )


def test_allow_keeps_only_the_listed_paths_into_objects_and_lists() -> None:
    shape = shaper(allow=["id", "customer.name", "items[*].sku", "items.qty"])
    assert shape(ORDER) == {
        "id": 7,
        "customer": {"name": "Ada"},
        "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
    }


def test_allow_of_a_path_that_is_absent_adds_nothing() -> None:
    assert shaper(allow=["id", "nope", "customer.nope"])(ORDER) == {"id": 7, "customer": {}}


def test_deny_drops_paths_and_keeps_the_rest() -> None:
    shape = shaper(deny=["internal", "customer.email", "items[*].supplier"])
    assert shape(ORDER) == {
        "id": 7,
        "status": "paid",
        "customer": {"id": 3, "name": "Ada"},
        "items": [{"sku": "a", "qty": 1, "price": 10}, {"sku": "b", "qty": 2, "price": 5}],
    }


def test_rename_renames_the_last_key_in_place_even_inside_lists() -> None:
    shape = shaper(rename={"status": "state", "customer.name": "full_name", "items.qty": "quantity"})
    out = shape(ORDER)
    assert out["state"] == "paid"
    assert "status" not in out
    assert out["customer"] == {"id": 3, "full_name": "Ada", "email": "ada@example.com"}
    assert [item["quantity"] for item in out["items"]] == [1, 2]


def test_unwrap_picks_a_part_and_the_other_rules_apply_to_it() -> None:
    shape = shaper(unwrap="customer", allow=["id", "name"], rename={"name": "customer_name"})
    assert shape(ORDER) == {"id": 3, "customer_name": "Ada"}


def test_unwrap_of_a_missing_part_is_an_error_naming_it() -> None:
    with pytest.raises(ShapeError, match=r"no 'data\.user' to unwrap"):
        shaper(unwrap="data.user")(ORDER)


def test_shaping_never_changes_the_response_it_reads() -> None:
    before = copy.deepcopy(ORDER)
    shaper(deny=["internal.cost", "items.supplier"], rename={"customer.name": "n"})(ORDER)
    shaper(allow=["items.sku"])(ORDER)
    assert before == ORDER


def test_a_collection_is_shaped_element_by_element() -> None:
    shape = shaper(collection=True, allow=["sku"], rename={"sku": "code"}, needs_object=False)
    assert shape(ORDER["items"]) == [{"code": "a"}, {"code": "b"}]


def test_a_collection_that_is_not_an_array_is_an_error() -> None:
    with pytest.raises(ShapeError, match="not the array `collection` expects"):
        shaper(collection=True, needs_object=False)({"items": []})


def test_an_array_without_collection_cannot_be_shaped_or_merged() -> None:
    with pytest.raises(ShapeError, match="declare `collection: true`"):
        shaper(allow=["sku"])(ORDER["items"])
    with pytest.raises(ShapeError, match="not an object to merge"):
        shaper()([1, 2])
    # Placed under a group, an array (or any value) is fine as it is.
    assert shaper(needs_object=False)([1, 2]) == [1, 2]


def _merge(aggregate: dict[str, Any]) -> Any:
    services = {name: {"instances": ["http://127.0.0.1:9"]} for name in ("a", "b", "c")}
    cfg = validate_config(
        {"services": services, "routes": [{"match": {"path": "/x"}, "aggregate": aggregate}]}
    )
    action = cfg.routes[0].aggregate
    assert action is not None
    return compile_merge(compile_plan(action, make_clusters(cfg)))


def test_strict_merge_places_groups_and_copies_allowed_keys_in_declared_order() -> None:
    merge = _merge(
        {
            "calls": {
                "a": {"service": "a", "path": "/", "allow": ["x", "y"]},
                "b": {"service": "b", "path": "/", "group": "b_out"},
                "c": {"service": "c", "path": "/", "allow": ["z"]},
            }
        }
    )
    # Outputs arrive in any order; the response is built in declared order.
    out = merge({"c": {"z": 3}, "b": [1], "a": {"x": 1, "y": 2}})
    assert list(out) == ["x", "y", "b_out", "z"]
    assert out == {"x": 1, "y": 2, "b_out": [1], "z": 3}


def test_a_call_without_output_contributes_nothing() -> None:
    merge = _merge(
        {
            "calls": {
                "a": {"service": "a", "path": "/", "allow": ["x"]},
                "b": {"service": "b", "path": "/", "group": "g", "required": False},
            }
        }
    )
    assert merge({"a": {"x": 1}}) == {"x": 1}


def test_namespaced_merge_puts_each_call_under_its_name() -> None:
    merge = _merge(
        {
            "merge": "namespaced",
            "calls": {"a": {"service": "a", "path": "/"}, "b": {"service": "b", "path": "/", "group": "bee"}},
        }
    )
    assert merge({"a": {"x": 1}, "b": {"x": 2}}) == {"a": {"x": 1}, "bee": {"x": 2}}


def test_override_merge_lets_the_later_declared_call_win() -> None:
    merge = _merge(
        {
            "merge": "override",
            "calls": {"a": {"service": "a", "path": "/"}, "b": {"service": "b", "path": "/"}},
        }
    )
    assert merge({"b": {"k": "from b", "n": {"y": 1}}, "a": {"k": "from a", "n": {"x": 1}}}) == {
        "k": "from b",
        "n": {"y": 1},
    }


def test_deep_merge_merges_objects_recursively_and_the_later_call_wins_the_rest() -> None:
    merge = _merge(
        {"merge": "deep", "calls": {"a": {"service": "a", "path": "/"}, "b": {"service": "b", "path": "/"}}}
    )
    a = {"user": {"id": 1, "name": "Ada", "tags": ["x"]}, "n": 1}
    b = {"user": {"email": "a@x", "tags": ["y"]}, "n": {"obj": True}}
    out = merge({"a": a, "b": b})
    assert out == {"user": {"id": 1, "name": "Ada", "tags": ["y"], "email": "a@x"}, "n": {"obj": True}}
    assert a == {"user": {"id": 1, "name": "Ada", "tags": ["x"]}, "n": 1}  # inputs untouched


def test_deep_merge_copies_on_write() -> None:
    base = {"a": {"b": 1}}
    nested = base["a"]
    out = deep_merge(dict(base), {"a": {"c": 2}})
    assert out == {"a": {"b": 1, "c": 2}}
    assert nested == {"b": 1}
