"""Load-time checks of an aggregate endpoint's calls, taken together: references to calls that
exist, no dependency cycles, fan-out values used, outputs that can be placed, and merge
collisions — two calls that could write the same top-level key without a rule that says who
wins is an error here, never a race at run time (the slower call silently overwriting the
faster is what KrakenD users keep tripping over).

Every problem carries its key path relative to the aggregate action, so the loader can point at
the line in the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeway.gateway.actions.aggregate.templates import Ref, Star, Steps, Template
from edgeway.gateway.config.keypath import Loc

# The top-level key of an aggregate's response that holds the gateway's completion report.
META_KEY = "_meta"

if TYPE_CHECKING:
    from edgeway.gateway.actions.aggregate.config import AggregateCall


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What validation parsed out of one call: its templates and dotted paths."""

    path: Template
    query: Mapping[str, Template]
    headers: Mapping[str, Template]
    body_refs: tuple[tuple[Loc, Ref], ...]
    for_each: Template | None
    batch: Template | None
    unwrap: Steps | None
    allow: tuple[Steps, ...] | None
    deny: tuple[Steps, ...]
    rename: tuple[tuple[Steps, str], ...]

    def located_refs(self) -> Iterator[tuple[Loc, Ref]]:
        """Every reference with the key path (relative to the call) of the template holding it."""
        for ref in self.path.refs:
            yield ("path",), ref
        for key, template in self.query.items():
            for ref in template.refs:
                yield ("query", key), ref
        for key, template in self.headers.items():
            for ref in template.refs:
                yield ("headers", key), ref
        yield from self.body_refs
        for key, fan in (("for_each", self.for_each), ("batch", self.batch)):
            if fan is not None:
                for ref in fan.refs:
                    yield (key,), ref

    def request_refs(self) -> Iterator[Ref]:
        """References of the request itself (not the fan-out list)."""
        for loc, ref in self.located_refs():
            if loc[0] not in {"for_each", "batch"}:
                yield ref


def check_calls(
    calls: Mapping[str, AggregateCall], merge: str
) -> tuple[tuple[str, ...], list[tuple[Loc, str]]]:
    """The calls in dependency order, and every problem found."""
    problems: list[tuple[Loc, str]] = []
    deps = _dependencies(calls, problems)
    order = _order(list(calls), deps, problems)
    _check_optional_deps(calls, deps, problems)
    _check_outputs(calls, merge, problems)
    return order, problems


def _dependencies(
    calls: Mapping[str, AggregateCall], problems: list[tuple[Loc, str]]
) -> dict[str, list[str]]:
    known = ", ".join(calls)
    deps: dict[str, list[str]] = {}
    for name, call in calls.items():
        facts = call.facts
        found: list[str] = []
        uses_item = uses_batch = False
        for loc, ref in facts.located_refs():
            where: Loc = ("calls", name, *loc)
            if ref.source == "calls":
                if ref.name == name:
                    problems.append((where, f"'{{{ref.text}}}': a call cannot read its own response"))
                elif ref.name not in calls:
                    problems.append((where, f"'{{{ref.text}}}': unknown call '{ref.name}' (calls: {known})"))
                elif ref.name is not None and ref.name not in found:
                    found.append(ref.name)
            elif ref.source == "item":
                uses_item = True
                if facts.for_each is None:
                    problems.append((where, f"'{{{ref.text}}}' is only defined in a call with for_each"))
            elif ref.source == "batch":
                uses_batch = True
                if facts.batch is None:
                    problems.append((where, "'{batch}' is only defined in a call with batch"))
        if facts.for_each is not None and not uses_item:
            problems.append(
                (("calls", name, "for_each"), "the call never uses '{item}', so every call would be the same")
            )
        if facts.batch is not None and not uses_batch:
            problems.append((("calls", name, "batch"), "the call never uses '{batch}' to send the values"))
        for index, dep in enumerate(call.depends_on):
            where = ("calls", name, "depends_on", index)
            if dep == name:
                problems.append((where, "a call cannot depend on itself"))
            elif dep not in calls:
                problems.append((where, f"unknown call '{dep}' (calls: {known})"))
            elif dep not in found:
                found.append(dep)
        deps[name] = found
    return deps


def _order(names: list[str], deps: dict[str, list[str]], problems: list[tuple[Loc, str]]) -> tuple[str, ...]:
    """Dependencies first, declaration order otherwise; a cycle is reported once, by its members."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order: list[str] = []
    reported: set[frozenset[str]] = set()

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            members = frozenset(cycle)
            if members not in reported:
                reported.add(members)
                problems.append(
                    (("calls", cycle[0]), f"the calls depend on each other in a cycle: {' → '.join(cycle)}")
                )
            return
        state[name] = 1
        for dep in deps.get(name, ()):
            visit(dep, [*stack, name])
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name, [])
    return tuple(order)


def _check_optional_deps(
    calls: Mapping[str, AggregateCall], deps: dict[str, list[str]], problems: list[tuple[Loc, str]]
) -> None:
    for name, call in calls.items():
        if not call.required:
            continue
        for dep in deps[name]:
            other = calls[dep]
            if not other.required and not other.has_fallback:
                problems.append(
                    (
                        ("calls", name, "required"),
                        f"required call '{name}' depends on optional call '{dep}', which may fail without "
                        f"a value: make '{dep}' required, give it a fallback, or make '{name}' optional",
                    )
                )


def effective_group(name: str, call: AggregateCall, merge: str) -> str | None:
    """The key a call's output goes under: its `group`, or its name when merging namespaced."""
    if call.hidden:
        return None
    if call.group is not None:
        return call.group
    return name if merge == "namespaced" else None


def _check_outputs(calls: Mapping[str, AggregateCall], merge: str, problems: list[tuple[Loc, str]]) -> None:
    writes: dict[str, frozenset[str] | None] = {}  # None: any key
    for name, call in calls.items():
        facts = call.facts
        base: Loc = ("calls", name)
        if call.hidden:
            if call.group is not None:
                problems.append(
                    ((*base, "group"), "a hidden call puts nothing in the response: drop `group`")
                )
            continue
        for key, paths in (("allow", facts.allow or ()), ("deny", facts.deny)):
            for index, steps in enumerate(paths):
                if isinstance(steps[0], Star):
                    problems.append(
                        (
                            (*base, key, index),
                            "paths apply to each element of a collection: drop the leading '[*]'",
                        )
                    )
        group = effective_group(name, call, merge)
        lists = "collection: true" if call.collection else "for_each" if facts.for_each is not None else None
        if group is None and lists is not None:
            problems.append(
                (
                    (*base, "group"),
                    f"the output of '{name}' is a list ({lists}); give it a `group` key to put it under "
                    "(or use merge: namespaced)",
                )
            )
        if group is None and call.has_fallback and not isinstance(call.fallback, dict):
            problems.append(
                (
                    (*base, "fallback"),
                    "the fallback of a call without `group` must be an object (its keys are merged)",
                )
            )
        if group is None:
            _check_meta_key(call, base, problems)
        # A list without a group is reported above; it is not also "any key".
        writes[name] = frozenset() if group is None and lists is not None else _top_keys(call, group)
        if group is None and call.has_fallback and isinstance(call.fallback, dict):
            allowed = writes[name]
            extra = set(call.fallback) - allowed if allowed is not None else set()
            if extra and merge == "strict":
                problems.append(
                    (
                        (*base, "fallback"),
                        f"the fallback writes keys the call's `allow` does not: {', '.join(sorted(extra))}",
                    )
                )
    if merge in {"strict", "namespaced"}:
        _check_collisions(writes, problems)


def _check_meta_key(call: AggregateCall, base: Loc, problems: list[tuple[Loc, str]]) -> None:
    """A call merged at the top level may not write `_meta`: the gateway's completion report
    lives there, and a client must be able to trust it (a service's own `_meta` is dropped at
    run time; a config that asks for it is refused here)."""
    facts = call.facts
    reserved = f"'{META_KEY}' is reserved for the gateway's completion report"
    renamed = {str(steps[0]): target for steps, target in facts.rename if len(steps) == 1}
    for index, steps in enumerate(facts.allow or ()):
        if str(steps[0]) == META_KEY and renamed.get(META_KEY, META_KEY) == META_KEY:
            problems.append(
                (
                    (*base, "allow", index),
                    f"{reserved}: a call without `group` cannot put it in the response "
                    "(rename it, or give the call a group)",
                )
            )
    for steps, target in facts.rename:
        if len(steps) == 1 and target == META_KEY:
            problems.append(((*base, "rename", str(steps[0])), f"{reserved}: choose another name"))
    if call.has_fallback and isinstance(call.fallback, dict) and META_KEY in call.fallback:
        problems.append(
            ((*base, "fallback"), f"{reserved}: the fallback of a call without `group` cannot set it")
        )


def _top_keys(call: AggregateCall, group: str | None) -> frozenset[str] | None:
    if group is not None:
        return frozenset({group})
    facts = call.facts
    if facts.allow is None:
        return None
    renamed = {steps[0]: target for steps, target in facts.rename if len(steps) == 1}
    return frozenset(renamed.get(str(steps[0]), str(steps[0])) for steps in facts.allow)


def _check_collisions(writes: dict[str, frozenset[str] | None], problems: list[tuple[Loc, str]]) -> None:
    names = list(writes)
    if len(names) < 2:
        return
    for name in names:
        if writes[name] is None:
            others = ", ".join(f"'{other}'" for other in names if other != name)
            problems.append(
                (
                    ("calls", name),
                    f"call '{name}' has neither `group` nor `allow`, so it may write any top-level key, "
                    f"including those of {others}. Give it a `group` or an `allow` list, or choose "
                    "merge: namespaced | deep | override",
                )
            )
    for later_index, later in enumerate(names):
        for earlier in names[:later_index]:
            a, b = writes[earlier], writes[later]
            if a is not None and b is not None and a & b:
                keys = ", ".join(sorted(a & b))
                problems.append(
                    (
                        ("calls", later),
                        f"calls '{earlier}' and '{later}' both write the top-level key(s) {keys}; rename, "
                        "group, or choose merge: deep | override",
                    )
                )
