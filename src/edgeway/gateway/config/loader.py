"""Load a gateway config file: YAML with line numbers, ``${ENV}`` interpolation, ``include:``,
then pydantic validation, with every problem reported as a located :class:`ConfigIssue`.

Includes: ``include: [a.yaml, b.yaml]`` at the top of a file names files relative to it. They are
merged in order, then the including file on top: mappings deep-merge with the later (including)
side winning, ``routes`` lists concatenate (included routes first), any other value is replaced.
An include cycle is an error naming the chain.

The same reading serves any YAML document with a pydantic model: :func:`load_model` (the system
file, ``edgeway.system``, is read with it), so every config file of edgeway reports its problems
the same way.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgeway.gateway.config.base import LocatedProblemsError
from edgeway.gateway.config.extras import missing_extras
from edgeway.gateway.config.keypath import Loc, format_loc
from edgeway.gateway.config.schema import GatewayConfig, RouteFacts, cross_check_routes
from edgeway.gateway.config.yaml_source import Node, parse_yaml
from edgeway.gateway.core.config import RouteIdentity
from edgeway.gateway.core.errors import ConfigError, ConfigIssue
from edgeway.gateway.tls.config import tls_files

_CONCATENATED_LISTS: frozenset[Loc] = frozenset({("routes",)})

M = TypeVar("M", bound=BaseModel)


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, sources: list[str] | None = None
) -> GatewayConfig:
    """Read, merge and validate a config file; raise ConfigError listing every problem.

    ``env`` defaults to ``os.environ``; tests pass their own mapping. ``sources``, when given,
    receives the real path of every file read (the file and its includes), valid or not, and
    the certificate, key and CA files ``listen.tls`` and ``services.*.tls`` name (absolute, not
    resolved: a renewal that swaps a symlink is a change): what live reload watches.
    """
    environment = os.environ if env is None else env
    issues: list[ConfigIssue] = []
    root = _load_tree(str(path), environment, (), issues, None, sources if sources is not None else [])
    if root is None:
        raise ConfigError(issues)
    data = root.to_python()
    if sources is not None:
        sources.extend(os.path.abspath(file) for file in tls_files(data))
    try:
        config = _validate(data, root, str(path))
    except ConfigError as exc:
        # A value that failed interpolation also fails validation; report it once.
        known = {(issue.file, issue.line) for issue in issues}
        issues.extend(issue for issue in exc.issues if (issue.file, issue.line) not in known)
        raise ConfigError(_in_file_order(issues)) from None
    if issues:
        raise ConfigError(_in_file_order(issues))
    return config


def validate_config(data: Mapping[str, Any], source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed mapping (from code or another format); raise ConfigError."""
    return _validate(dict(data), None, source)


def load_model(
    path: str | os.PathLike[str],
    model: type[M],
    env: Mapping[str, str] | None = None,
    *,
    check: Callable[[M], list[tuple[Loc, str]]] | None = None,
    sources: list[str] | None = None,
) -> M:
    """Read a YAML file into ``model`` the way :func:`load_config` reads a gateway config:
    ``${ENV}`` interpolation, ``include:``, and every problem a :class:`ConfigIssue` naming file,
    line, column and key path; raise :class:`ConfigError` listing them all.

    ``check`` runs on the validated model and returns problems found across fields, each at a
    key path, which are located in the file like validation errors.
    """
    environment = os.environ if env is None else env
    issues: list[ConfigIssue] = []
    root = _load_tree(str(path), environment, (), issues, None, sources if sources is not None else [])
    if root is None:
        raise ConfigError(issues)
    if "include" not in model.model_fields:
        root.value.pop("include", None)  # kept for the gateway's config, which shows its includes
    try:
        value = validate_located(model, root.to_python(), root, str(path))
    except ConfigError as exc:
        known = {(issue.file, issue.line) for issue in issues}
        issues.extend(issue for issue in exc.issues if (issue.file, issue.line) not in known)
        raise ConfigError(_in_file_order(issues)) from None
    if check is not None:
        issues.extend(_locate(root, str(path), loc, message) for loc, message in check(value))
    if issues:
        raise ConfigError(_in_file_order(issues))
    return value


def validate_located(model: type[M], data: dict[str, Any], root: Node | None, source: str) -> M:
    """``model.model_validate(data)``, its errors as ConfigIssues located in ``root``'s files."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_in_file_order(_validation_issues(model, exc, root, source))) from None


# --------------------------------------------------------------------------- files and includes


def _load_tree(
    file: str,
    env: Mapping[str, str],
    chain: tuple[str, ...],
    issues: list[ConfigIssue],
    included_at: tuple[Node, str] | None,
    sources: list[str],
) -> Node | None:
    real = os.path.realpath(file)
    if real in chain:
        assert included_at is not None  # the root file cannot be in an empty chain
        node, parent = included_at
        names = " -> ".join([*(os.path.basename(c) for c in chain), os.path.basename(real)])
        issues.append(_issue_at(parent, node, ("include",), f"include cycle: {names}"))
        return None
    # Watched by the path as given, not its target: Kubernetes updates a ConfigMap volume by
    # swapping a `..data` symlink, and the old target is deleted, never changed (config_watch
    # resolves the path again at every poll). Even when unreadable: it may appear later.
    sources.append(os.path.abspath(file))
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if included_at is None:
            issues.append(ConfigIssue(file, None, None, "", f"cannot read the config file: {reason}"))
        else:
            node, parent = included_at
            issues.append(
                _issue_at(parent, node, ("include",), f"cannot read included file '{file}': {reason}")
            )
        return None
    tree, found = parse_yaml(text, file, env)
    issues.extend(found)
    if tree is None:
        return None
    if not tree.is_mapping:
        kind = "a list" if tree.is_sequence else "a single value"
        issues.append(
            ConfigIssue(
                file, tree.line, tree.column, "", f"a config file must be a mapping of keys, not {kind}"
            )
        )
        return None
    include = tree.value.pop("include", None)
    if include is None:
        return tree
    entries = _include_entries(include, file, issues)
    merged: Node | None = None
    base_dir = os.path.dirname(file)
    for entry in entries:
        target = os.path.normpath(os.path.join(base_dir, str(entry.value)))
        sub = _load_tree(target, env, (*chain, real), issues, (entry, file), sources)
        if sub is not None:
            merged = sub if merged is None else _merge(merged, sub, ())
    result = tree if merged is None else _merge(merged, tree, ())
    if not chain:  # keep the root's own include list visible in the validated config
        result.value["include"] = include
    return result


def _include_entries(include: Node, file: str, issues: list[ConfigIssue]) -> list[Node]:
    items = include.value if include.is_sequence else [include]
    good: list[Node] = []
    for index, item in enumerate(items):
        if isinstance(item.value, str) and item.value:
            good.append(item)
        else:
            loc: Loc = ("include", index) if include.is_sequence else ("include",)
            issues.append(_issue_at(file, item, loc, "an include entry must be a file path (string)"))
    return good


def _merge(base: Node, top: Node, loc: Loc) -> Node:
    """Deep-merge ``top`` over ``base``; both trees keep their own locations."""
    if base.is_mapping and top.is_mapping:
        out = dict(base.value)
        for key, child in top.value.items():
            out[key] = _merge(out[key], child, (*loc, key)) if key in out else child
        return Node(out, top.file, top.line, top.column, top.loc, top.key_line, top.key_column)
    if base.is_sequence and top.is_sequence and loc in _CONCATENATED_LISTS:
        items = [*base.value, *top.value]
        return Node(items, top.file, top.line, top.column, top.loc, top.key_line, top.key_column)
    return top


def _issue_at(file: str, node: Node, loc: Loc, message: str) -> ConfigIssue:
    line, column = node.place()
    return ConfigIssue(file, line, column, format_loc(loc), message)


# --------------------------------------------------------------------------- validation errors


def _validation_issues(
    model: type[BaseModel], exc: ValidationError, root: Node | None, source: str
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        found = (error.get("ctx") or {}).get("error")
        if isinstance(found, LocatedProblemsError):
            for relative, message in found.problems:
                issues.append(_locate(root, source, (*loc, *relative), message))
        else:
            issues.append(_locate(root, source, loc, _message(model, error["type"], loc, error["msg"])))
    return issues


def _validate(data: dict[str, Any], root: Node | None, source: str) -> GatewayConfig:
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        issues = _validation_issues(GatewayConfig, exc, root, source)
        reported = {issue.key_path for issue in issues}
        for loc, message in cross_check_routes(*_raw_facts(data)):
            issue = _locate(root, source, loc, message)
            if issue.key_path not in reported:
                issues.append(issue)
        raise ConfigError(_in_file_order(issues)) from None
    # A valid config this install cannot run (a feature whose extra is missing) is refused here,
    # where the setting can be pointed at, not when the feature first runs.
    absent = missing_extras(config)
    if absent:
        raise ConfigError(_in_file_order([_locate(root, source, loc, message) for loc, message in absent]))
    return config


def _raw_facts(data: Mapping[str, Any]) -> tuple[list[str], list[RouteFacts]]:
    """Cross-route facts read leniently from unvalidated data; anything malformed is skipped
    (its own validation error is already reported)."""
    services = data.get("services", {})
    # A malformed services block has its own error; checking references against it would only
    # add noise.
    check_services = isinstance(services, dict)
    names = [str(name) for name in services] if isinstance(services, dict) else []
    routes = data.get("routes")
    facts: list[RouteFacts] = []
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        route_id = route.get("id")
        proxy = route.get("proxy")
        facts.append(
            RouteFacts(
                index,
                route_id if isinstance(route_id, str) else None,
                _raw_proxy_services(proxy) if isinstance(proxy, dict) and check_services else (),
                _raw_identity(route.get("match")),
            )
        )
    return names, facts


def _raw_proxy_services(proxy: dict[str, Any]) -> tuple[tuple[Loc, str], ...]:
    """The services a proxy block names (its service, split sides, canaries, mirror), read
    leniently: entries of the wrong shape are skipped."""
    found: list[tuple[Loc, str]] = []
    if isinstance(proxy.get("service"), str):
        found.append((("proxy", "service"), proxy["service"]))
    for key in ("split", "canary"):
        entries = proxy.get(key)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and isinstance(entry.get("service"), str):
                found.append((("proxy", key, i, "service"), entry["service"]))
    mirror = proxy.get("mirror")
    if isinstance(mirror, dict) and isinstance(mirror.get("service"), str):
        found.append((("proxy", "mirror", "service"), mirror["service"]))
    return tuple(found)


def _raw_identity(match: Any) -> RouteIdentity | None:
    if not isinstance(match, dict) or not isinstance(match.get("path"), str):
        return None
    methods, hosts = match.get("methods"), match.get("hosts")
    if not (methods is None or (isinstance(methods, list) and all(isinstance(m, str) for m in methods))):
        return None
    if not (hosts is None or (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts))):
        return None
    return (
        match["path"],
        frozenset(m.upper() for m in methods) if methods is not None else None,
        frozenset(h.lower().rstrip(".") for h in hosts) if hosts is not None else None,
    )


def _message(model: type[BaseModel], kind: str, loc: Loc, msg: str) -> str:
    if kind == "missing" and loc:
        return f"required key '{loc[-1]}' is missing"
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        if allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            return f"unknown key '{key}' ({hint}allowed: {', '.join(allowed)})"
        return f"unknown key '{key}'"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _locate(root: Node | None, source: str, loc: Loc, message: str) -> ConfigIssue:
    """Point at the deepest node of ``loc`` that exists (a missing key points at its parent)."""
    if root is None:
        return ConfigIssue(source, None, None, format_loc(loc), message)
    node, depth = root, 0
    for part in loc:
        child: Node | None = None
        if node.is_mapping and isinstance(part, str):
            child = node.value.get(part)
        elif node.is_sequence and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, depth = child, depth + 1
    line, column = node.place()
    # The key path is told as the node's own file has it: after an include, merged list indices
    # would not match what the user sees in that file.
    return ConfigIssue(node.file, line, column, format_loc((*node.loc, *loc[depth:])), message)


def _in_file_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    files: dict[str, int] = {}
    for issue in issues:
        files.setdefault(issue.file, len(files))
    return sorted(issues, key=lambda i: (files[i.file], i.line or 0, i.column or 0))


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found at ``loc`` in ``model``, for "did you mean" hints."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
            field = annotation.model_fields.get(part)
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict and isinstance(part, str):
            annotation = typing.get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` → ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
