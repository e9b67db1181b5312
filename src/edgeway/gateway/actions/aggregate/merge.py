"""Merging call outputs into the response object, in the order the calls are declared (never the
order they finished: the same inputs always give the same response).

- ``strict`` and ``namespaced``: outputs with a group go under their key, the others' keys are
  copied; load-time checks guarantee no two calls write the same key.
- ``override``: the same, and a later call replaces an earlier call's key.
- ``deep``: objects merge recursively; anything else (a list, a scalar, an object meeting a
  non-object) is replaced by the later call's value.

The top-level ``_meta`` key is the gateway's (its completion report): a call merged at the top
level that answers one has it dropped.

Outputs are never changed in place: they may be a call's fallback (config data) or the response
other calls read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgeway.gateway.actions.aggregate.checks import META_KEY
from edgeway.gateway.actions.aggregate.plan import Plan

Merge = Callable[[Mapping[str, Any]], dict[str, Any]]


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; returns ``base`` (a dict this merge owns) updated."""
    for key, value in top.items():
        current = base.get(key)
        if type(current) is dict and type(value) is dict:
            base[key] = deep_merge(dict(current), value)
        else:
            base[key] = value
    return base


def compile_merge(plan: Plan) -> Merge:
    placements = tuple((call.name, call.group) for call in plan.declared if not call.hidden)
    deep = plan.merge == "deep"

    def merge(outputs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, group in placements:
            value = outputs.get(name, _ABSENT)
            if value is _ABSENT:
                continue
            if group is not None:
                if deep and type(value) is dict and type(out.get(group)) is dict:
                    out[group] = deep_merge(dict(out[group]), value)
                else:
                    out[group] = value
            elif type(value) is dict:
                if deep:
                    deep_merge(out, value)
                else:
                    out.update(value)
        # The top-level `_meta` is the gateway's: a service's own (a call without a group
        # answering one) never reaches the client as if the gateway had said it.
        out.pop(META_KEY, None)
        return out

    return merge


_ABSENT = object()
