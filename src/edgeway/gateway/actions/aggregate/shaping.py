"""Per-call response shaping, compiled once from the config: unwrap, allow, deny, rename.

Order: ``unwrap`` picks the part to keep; then, on that value (or on each element when the call
is a ``collection``), ``allow`` keeps only the listed paths, ``deny`` drops paths, ``rename``
renames keys. A path whose value is a list applies to each element (``items.id`` and
``items[*].id`` say the same). Shaping never changes its input: dependent calls read the
response as it came, so every change copies the objects on its way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeway.gateway.actions.aggregate.templates import Steps, format_steps
from edgeway.gateway.actions.aggregate.values import MISSING, lookup

Shaper = Callable[[Any], Any]
# A path tree: key -> subtree, or True for "this whole value".
Tree = dict[str, "Tree | bool"]


class ShapeError(Exception):
    """A response does not have the shape the call's config expects (answered as 502)."""


def _keys(steps: Steps) -> tuple[str, ...]:
    """Lists are walked element by element anyway, so ``[*]`` adds nothing to a shaping path."""
    return tuple(step for step in steps if isinstance(step, str))


def _tree(paths: tuple[Steps, ...]) -> Tree:
    root: Tree = {}
    for steps in map(_keys, paths):
        node = root
        if not steps:
            continue
        for step in steps[:-1]:
            child = node.get(step)
            if child is True:
                break  # a shorter path already covers this one
            if not isinstance(child, dict):
                child = node[step] = {}
            node = child
        else:
            node[steps[-1]] = True
    return root


def _allow(value: Any, tree: Tree) -> Any:
    if type(value) is list:
        return [_allow(element, tree) for element in value]
    if type(value) is not dict:
        return value
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        if key in value:
            out[key] = value[key] if sub is True else _allow(value[key], sub)  # type: ignore[arg-type]
    return out


def _deny(value: Any, tree: Tree) -> Any:
    if type(value) is list:
        return [_deny(element, tree) for element in value]
    if type(value) is not dict:
        return value
    out = value
    for key, sub in tree.items():
        if key in value:
            if out is value:
                out = dict(value)
            if sub is True:
                del out[key]
            else:
                out[key] = _deny(value[key], sub)  # type: ignore[arg-type]
    return out


def _rename(value: Any, keys: tuple[str, ...], new: str) -> Any:
    if type(value) is list:
        return [_rename(element, keys, new) for element in value]
    if type(value) is not dict or not keys or keys[0] not in value:
        return value
    head, rest = keys[0], keys[1:]
    out = dict(value)
    if rest:
        out[head] = _rename(value[head], rest, new)
    else:
        out[new] = out.pop(head)
    return out


def compile_shaper(
    *,
    unwrap: Steps | None,
    allow: tuple[Steps, ...] | None,
    deny: tuple[Steps, ...],
    rename: tuple[tuple[Steps, str], ...],
    collection: bool,
    needs_object: bool,
) -> Shaper:
    """One function applying the call's shaping; ``needs_object`` when the output is merged
    key by key (no group), so anything but an object is an error."""
    allow_tree = _tree(allow) if allow is not None else None
    deny_tree = _tree(deny) if deny else None
    renames = tuple((_keys(steps), new) for steps, new in rename)
    reshapes = allow_tree is not None or deny_tree is not None or bool(renames)

    def shape_one(value: Any) -> Any:
        if allow_tree is not None:
            value = _allow(value, allow_tree)
        if deny_tree is not None:
            value = _deny(value, deny_tree)
        for keys, new in renames:
            value = _rename(value, keys, new)
        return value

    def shape(value: Any) -> Any:
        if unwrap is not None:
            value = lookup(value, unwrap)
            if value is MISSING:
                raise ShapeError(f"the response has no '{format_steps(unwrap)}' to unwrap")
        if collection:
            if type(value) is not list:
                raise ShapeError(f"the response is a JSON {_kind(value)}, not the array `collection` expects")
            return [shape_one(element) for element in value] if reshapes else value
        if type(value) is list and reshapes:
            raise ShapeError("the response is a JSON array: declare `collection: true` to shape each element")
        if needs_object and type(value) is not dict:
            raise ShapeError(
                f"the response is a JSON {_kind(value)}, not an object to merge; give the call a group"
            )
        return shape_one(value) if reshapes else value

    return shape


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "number"
