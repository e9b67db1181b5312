"""Load-time checks of aggregate endpoints: every mistake is a config error with its file, line
and key path, found before the gateway serves a request."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from edgeway.gateway.config import ConfigError, load_config, validate_config

SERVICES = {name: {"instances": [f"http://127.0.0.1:{9000 + i}"]} for i, name in enumerate(("a", "b", "c"))}


def check(aggregate: dict[str, Any], path: str = "/x/{id}") -> list[str]:
    """The problems of one aggregate route, as 'key.path: message' lines ([] when valid)."""
    try:
        validate_config({"services": SERVICES, "routes": [{"match": {"path": path}, "aggregate": aggregate}]})
    except ConfigError as exc:
        return [f"{issue.key_path}: {issue.message}" for issue in exc.issues]
    return []


def calls(**named: dict[str, Any]) -> dict[str, Any]:
    return {"calls": named}


def one(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_valid_graph_loads_in_dependency_order() -> None:
    cfg = validate_config(
        {
            "services": SERVICES,
            "routes": [
                {
                    "match": {"path": "/orders/{id}"},
                    "aggregate": calls(
                        user={"service": "b", "path": "/users/{calls.order.user_id}", "group": "user"},
                        order={"service": "a", "path": "/orders/{path.id}", "group": "order"},
                        items={
                            "service": "c",
                            "path": "/products/{item}",
                            "for_each": "{calls.order.items[*].sku}",
                            "group": "products",
                        },
                    ),
                }
            ],
        }
    )
    action = cfg.routes[0].aggregate
    assert action is not None
    assert action.order == ("order", "user", "items")


def test_two_calls_that_may_write_any_key_collide() -> None:
    problems = check(calls(x={"service": "a", "path": "/"}, y={"service": "b", "path": "/"}))
    assert len(problems) == 2
    assert problems[0].startswith("routes[0].aggregate.calls.x: call 'x' has neither `group` nor `allow`")
    assert "merge: namespaced | deep | override" in problems[0]


def test_allowed_top_level_keys_that_overlap_collide_and_name_the_keys() -> None:
    problem = one(
        check(
            calls(
                x={"service": "a", "path": "/", "allow": ["id", "name", "meta.x"]},
                y={"service": "b", "path": "/", "allow": ["meta", "total"]},
            )
        )
    )
    assert problem == (
        "routes[0].aggregate.calls.y: calls 'x' and 'y' both write the top-level key(s) meta; "
        "rename, group, or choose merge: deep | override"
    )


def test_a_rename_resolves_a_collision_and_equal_groups_collide() -> None:
    assert (
        check(
            calls(
                x={"service": "a", "path": "/", "allow": ["id"]},
                y={"service": "b", "path": "/", "allow": ["id"], "rename": {"id": "y_id"}},
            )
        )
        == []
    )
    problem = one(
        check(
            calls(
                x={"service": "a", "path": "/", "group": "g"}, y={"service": "b", "path": "/", "group": "g"}
            )
        )
    )
    assert "both write the top-level key(s) g" in problem


def test_one_unrestricted_call_alone_is_fine_and_merge_rules_lift_the_check() -> None:
    assert check(calls(x={"service": "a", "path": "/"})) == []
    for merge in ("namespaced", "deep", "override"):
        both = calls(x={"service": "a", "path": "/"}, y={"service": "b", "path": "/"})
        assert check({**both, "merge": merge}) == [], merge


def test_namespaced_groups_must_still_differ() -> None:
    problem = one(
        check(
            {
                "merge": "namespaced",
                **calls(x={"service": "a", "path": "/"}, y={"service": "b", "path": "/", "group": "x"}),
            }
        )
    )
    assert "both write the top-level key(s) x" in problem


def test_underscore_meta_is_reserved() -> None:
    problem = one(check(calls(x={"service": "a", "path": "/", "group": "_meta"})))
    assert "'_meta' is reserved" in problem


def test_unknown_calls_and_self_references_are_named() -> None:
    problems = check(
        calls(
            x={"service": "a", "path": "/{calls.nope.id}", "group": "x"},
            y={"service": "b", "path": "/{calls.y.id}", "group": "y"},
            z={"service": "c", "path": "/", "group": "z", "depends_on": ["ghost"]},
        )
    )
    assert problems == [
        "routes[0].aggregate.calls.x.path: '{calls.nope.id}': unknown call 'nope' (calls: x, y, z)",
        "routes[0].aggregate.calls.y.path: '{calls.y.id}': a call cannot read its own response",
        "routes[0].aggregate.calls.z.depends_on[0]: unknown call 'ghost' (calls: x, y, z)",
    ]


def test_a_dependency_cycle_is_reported_once_with_its_members() -> None:
    problem = one(
        check(
            calls(
                x={"service": "a", "path": "/{calls.z.id}", "group": "x"},
                y={"service": "b", "path": "/{calls.x.id}", "group": "y"},
                z={"service": "c", "path": "/", "group": "z", "depends_on": ["y"]},
            )
        )
    )
    assert problem == "routes[0].aggregate.calls.x: the calls depend on each other in a cycle: x → z → y → x"


def test_path_references_must_be_parameters_of_the_route() -> None:
    problem = one(check(calls(x={"service": "a", "path": "/items/{path.sku}"}), path="/x/{id}"))
    assert problem == (
        "routes[0].aggregate.calls.x.path: '{path.sku}': path '/x/{id}' has no parameter 'sku' (defined: id)"
    )


def test_fan_out_needs_a_group_and_must_use_its_element() -> None:
    problems = check(
        calls(
            order={"service": "a", "path": "/", "group": "order"},
            each={"service": "b", "path": "/p", "for_each": "{calls.order.items[*].id}"},
            batched={"service": "c", "path": "/p", "batch": "{calls.order.items[*].id}", "group": "b"},
        )
    )
    assert problems == [
        "routes[0].aggregate.calls.each.for_each: the call never uses '{item}', "
        "so every call would be the same",
        "routes[0].aggregate.calls.batched.batch: the call never uses '{batch}' to send the values",
        "routes[0].aggregate.calls.each.group: the output of 'each' is a list (for_each); "
        "give it a `group` key to put it under (or use merge: namespaced)",
    ]


def test_item_and_batch_exist_only_in_fan_out_calls() -> None:
    problems = check(calls(x={"service": "a", "path": "/{item}/{batch}", "group": "x"}))
    assert problems == [
        "routes[0].aggregate.calls.x.path: '{item}' is only defined in a call with for_each",
        "routes[0].aggregate.calls.x.path: '{batch}' is only defined in a call with batch",
    ]


def test_for_each_and_batch_are_one_reference_and_not_both() -> None:
    problems = check(
        calls(
            x={"service": "a", "path": "/{item}", "for_each": "ids: {query.ids}", "group": "x"},
            y={
                "service": "b",
                "path": "/{batch}",
                "for_each": "{query.a}",
                "batch": "{query.b}",
                "group": "y",
            },
        )
    )
    assert "routes[0].aggregate.calls.x.for_each: for_each must be exactly one reference" in problems[0]
    assert problems[1] == "routes[0].aggregate.calls.y.batch: set either for_each or batch, not both"


def test_a_required_call_cannot_hang_on_an_optional_call_without_a_fallback() -> None:
    problem = one(
        check(
            calls(
                x={"service": "a", "path": "/", "group": "x", "required": False},
                y={"service": "b", "path": "/{calls.x.id}", "group": "y"},
            )
        )
    )
    assert problem.startswith(
        "routes[0].aggregate.calls.y.required: required call 'y' depends on optional call 'x'"
    )
    # With a fallback the dependency always has a value.
    assert (
        check(
            calls(
                x={"service": "a", "path": "/", "group": "x", "required": False, "fallback": {"id": 0}},
                y={"service": "b", "path": "/{calls.x.id}", "group": "y"},
            )
        )
        == []
    )


def test_fallback_rules() -> None:
    problems = check(
        calls(
            x={"service": "a", "path": "/", "group": "x", "required": True, "fallback": 1},
            y={"service": "b", "path": "/", "allow": ["a"], "required": False, "fallback": 3},
            z={"service": "c", "path": "/", "allow": ["b"], "required": False, "fallback": {"b": 1, "c": 2}},
        )
    )
    assert problems == [
        "routes[0].aggregate.calls.x.fallback: a required call has no use for a fallback: "
        "drop `required: true` or the fallback",
    ]
    problems = check(
        calls(
            y={"service": "b", "path": "/", "allow": ["a"], "required": False, "fallback": 3},
            z={"service": "c", "path": "/", "allow": ["b"], "required": False, "fallback": {"b": 1, "c": 2}},
        )
    )
    assert problems == [
        "routes[0].aggregate.calls.y.fallback: the fallback of a call without `group` "
        "must be an object (its keys are merged)",
        "routes[0].aggregate.calls.z.fallback: the fallback writes keys the call's `allow` does not: c",
    ]


def test_a_fallback_alone_makes_the_call_optional() -> None:
    # The reference says a fallback makes the call optional: `fallback:` without `required`
    # loads, and the call is optional (a dependent required call may read it).
    cfg = validate_config(
        {
            "services": SERVICES,
            "routes": [
                {
                    "match": {"path": "/x"},
                    "aggregate": calls(
                        x={"service": "a", "path": "/", "group": "x", "fallback": {"id": 0}},
                        y={"service": "b", "path": "/{calls.x.id}", "group": "y"},
                    ),
                }
            ],
        }
    )
    action = cfg.routes[0].aggregate
    assert action is not None
    assert action.calls["x"].required is False
    assert action.calls["y"].required is True


def test_meta_is_reserved_wherever_a_call_could_write_it_at_the_top_level() -> None:
    reserved = "'_meta' is reserved for the gateway's completion report"
    problems = check(
        {
            "merge": "override",
            **calls(
                a={"service": "a", "path": "/", "allow": ["id", "_meta"]},
                b={"service": "b", "path": "/", "allow": ["x"], "rename": {"x": "_meta"}},
                c={
                    "service": "c",
                    "path": "/",
                    "allow": ["y"],
                    "required": False,
                    "fallback": {"y": 1, "_meta": 2},
                },
            ),
        }
    )
    assert problems == [
        f"routes[0].aggregate.calls.a.allow[1]: {reserved}: a call without `group` cannot put it in the "
        "response (rename it, or give the call a group)",
        f"routes[0].aggregate.calls.b.rename.x: {reserved}: choose another name",
        f"routes[0].aggregate.calls.c.fallback: {reserved}: the fallback of a call without `group` cannot "
        "set it",
    ]
    # Under a group, or renamed away, or nested, `_meta` is the service's data.
    assert (
        check(
            calls(
                a={"service": "a", "path": "/", "group": "a", "allow": ["_meta"], "rename": {"x": "_meta"}},
                b={
                    "service": "b",
                    "path": "/",
                    "allow": ["_meta", "z.x"],
                    "rename": {"_meta": "m", "z.x": "_meta"},
                },
            )
        )
        == []
    )
    # With merge: namespaced a call's name is its key in the response.
    problems = check({"merge": "namespaced", **calls(_meta={"service": "a", "path": "/"})})
    assert any("call name '_meta' is reserved" in p for p in problems), problems


def test_shaping_paths_are_checked() -> None:
    problems = check(
        calls(
            x={
                "service": "a",
                "path": "/",
                "allow": ["items[0].id", "[*].id"],
                "deny": ["a..b"],
                "rename": {"a": "b.c"},
                "unwrap": "",
            }
        )
    )
    assert problems == [
        "routes[0].aggregate.calls.x.unwrap: a dotted path may not be empty",
        "routes[0].aggregate.calls.x.allow[0]: 'items[0].id': use '[*]' for lists here, not a position",
        "routes[0].aggregate.calls.x.deny[0]: path 'a..b': empty or invalid key at position 2",
        "routes[0].aggregate.calls.x.rename.a: the new name 'b.c' must be one plain key",
    ]
    problem = one(
        check(calls(x={"service": "a", "path": "/", "allow": ["[*].id"], "collection": True, "group": "x"}))
    )
    assert "drop the leading '[*]'" in problem


def test_unknown_services_in_calls_are_named_by_key_path() -> None:
    problem = one(check(calls(x={"service": "nope", "path": "/"})))
    assert problem == "routes[0].aggregate.calls.x.service: unknown service 'nope' (known: a, b, c)"


def test_call_fields_are_checked() -> None:
    problems = check(
        {
            "calls": {
                "bad-name": {"service": "a", "path": "/"},
            }
        }
    )
    assert problems == [
        "routes[0].aggregate.calls: call name 'bad-name' may use letters, digits and '_' only"
    ]
    problems = check(calls(x={"service": "a", "path": "no-slash", "method": "G T", "concurrency": 0}))
    assert "routes[0].aggregate.calls.x.method: 'G T' is not an HTTP method" in problems
    assert any(p.startswith("routes[0].aggregate.calls.x.concurrency:") for p in problems)


def test_gateway_owned_headers_cannot_be_forwarded_from_the_client() -> None:
    problem = one(
        check(
            {**calls(x={"service": "a", "path": "/"}), "forward_headers": ["authorization", "Content-Length"]}
        )
    )
    assert problem.startswith(
        "routes[0].aggregate.forward_headers[1]: 'Content-Length' is set by the gateway"
    )


def test_errors_point_at_the_file_line_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            services:
              a: {instances: ["http://127.0.0.1:9001"]}
              b: {instances: ["http://127.0.0.1:9002"]}
            routes:
              - match: {path: "/screen"}
                aggregate:
                  calls:
                    first:
                      service: a
                      path: /one
                    second:
                      service: b
                      path: /two/{calls.frist.id}
            """
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:8:9: routes[0].aggregate.calls.first: call 'first' has neither" in lines[0]
    assert lines[2] == (
        f"{path}:13:11: routes[0].aggregate.calls.second.path: '{{calls.frist.id}}': unknown call 'frist' "
        "(calls: first, second)"
    )


def test_a_hidden_call_writes_no_key_so_it_never_collides() -> None:
    assert (
        check(calls(x={"service": "a", "path": "/", "hidden": True}, y={"service": "b", "path": "/"})) == []
    )
    problem = one(check(calls(x={"service": "a", "path": "/", "hidden": True, "group": "x"})))
    assert (
        problem
        == "routes[0].aggregate.calls.x.group: a hidden call puts nothing in the response: drop `group`"
    )
