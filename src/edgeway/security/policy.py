"""Authorization: RBAC and ABAC policies as data, evaluated locally, deny-overrides.

A policy document (YAML or JSON)::

    version: 7
    roles:
      admin: ["*"]                          # role -> permission patterns
      support:
        permissions: ["tickets:*"]
        inherits: [customer]
    policies:
      - id: owner-reads-own-order
        effect: allow                       # allow | deny
        actions: ["orders:read"]            # patterns, ``*`` matches anything
        when: {eq: [resource.owner, subject.sub]}
      - id: support-reads-region
        effect: allow
        actions: ["orders:read"]
        roles: [support]                    # only for subjects holding one of these roles
        when: {eq: [subject.region, resource.region]}
      - id: suspended-users-do-nothing
        effect: deny
        actions: ["*"]
        when: {eq: [subject.status, suspended]}

Conditions are data, compiled once into closures: no ``eval``, no attribute access beyond plain
mapping lookups. Operators: ``eq ne in contains gt lt ge le`` over two operands, ``and``/``or``
over a list, ``not`` over one condition, ``exists`` over one reference. An operand that is a
string starting with ``subject.``, ``resource.`` or ``context.`` is a reference (dots walk nested
mappings); ``{value: ...}`` forces a literal. A reference to a missing attribute makes every
comparison false, so a missing ``owner`` can never equal a missing ``sub``.

Decision order: any matching ``deny`` policy denies; then a role permission or a matching
``allow`` policy allows; otherwise the default is deny.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from edgeway.security.errors import PolicyError
from edgeway.security.poller import Poller

Attributes = Mapping[str, Any]
_Env = tuple[Attributes, Attributes, Attributes]  # subject, resource, context
_Condition = Callable[[_Env], bool]
_Operand = Callable[[_Env], Any]

_ROOTS = {"subject": 0, "resource": 1, "context": 2}
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    policy_id: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


# --- the rule language ----------------------------------------------------------------------------


def _reference(path: str) -> _Operand:
    root, _, rest = path.partition(".")
    index = _ROOTS[root]
    parts = tuple(rest.split("."))

    def lookup(env: _Env) -> Any:
        value: Any = env[index]
        for part in parts:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    return lookup


def _operand(spec: Any, where: str) -> _Operand:
    if isinstance(spec, str):
        root = spec.partition(".")[0]
        if root in _ROOTS and "." in spec:
            if not spec.partition(".")[2] or ".." in spec or spec.endswith("."):
                raise PolicyError(f"{where}: malformed attribute reference {spec!r}")
            return _reference(spec)
    if isinstance(spec, Mapping):
        if set(spec) != {"value"}:
            raise PolicyError(f"{where}: an operand mapping must be {{value: ...}}, got keys {sorted(spec)}")
        spec = spec["value"]
    literal = spec
    return lambda env: literal


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordered(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _eq(a: Any, b: Any) -> bool:
    # Python says True == 1; a policy must not.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _in(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        return isinstance(a, str) and a in b  # substring
    if isinstance(b, list | tuple):
        return bool(a in b)
    return False


def _contains(a: Any, b: Any) -> bool:
    return bool(_in(b, a))


def _gt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a > b


def _lt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a < b


def _ge(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a >= b


def _le(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a <= b


_BINARY: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _eq,
    "ne": _ne,
    "in": _in,
    "contains": _contains,
    "gt": _gt,
    "lt": _lt,
    "ge": _ge,
    "le": _le,
}
OPERATORS = (*_BINARY, "and", "or", "not", "exists")


def compile_condition(spec: Any, where: str = "condition") -> _Condition:
    """Compile a condition document into a predicate over (subject, resource, context)."""
    if isinstance(spec, bool):
        constant = spec
        return lambda env: constant
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise PolicyError(f"{where}: a condition is a mapping with exactly one operator, got {spec!r}")
    ((op, args),) = spec.items()
    here = f"{where}.{op}"
    if op in _BINARY:
        if not isinstance(args, list) or len(args) != 2:
            raise PolicyError(f"{here}: takes a list of two operands")
        left, right = _operand(args[0], f"{here}[0]"), _operand(args[1], f"{here}[1]")
        compare = _BINARY[op]

        def binary(env: _Env) -> bool:
            a, b = left(env), right(env)
            return a is not _MISSING and b is not _MISSING and compare(a, b)

        return binary
    if op in ("and", "or"):
        if not isinstance(args, list) or not args:
            raise PolicyError(f"{here}: takes a non-empty list of conditions")
        parts = tuple(compile_condition(a, f"{here}[{i}]") for i, a in enumerate(args))
        if op == "and":
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)
    if op == "not":
        inner = compile_condition(args, here)
        return lambda env: not inner(env)
    if op == "exists":
        if not (isinstance(args, str) and args.partition(".")[0] in _ROOTS):
            raise PolicyError(f"{here}: takes one attribute reference such as subject.region")
        ref = _reference(args)
        return lambda env: ref(env) is not _MISSING and ref(env) is not None
    raise PolicyError(f"{where}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def _patterns(values: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise PolicyError(f"{where}: must be a list of non-empty strings")
    return tuple(re.compile(fnmatch.translate(v)) for v in values)


def _matches(patterns: Sequence[re.Pattern[str]], value: str) -> bool:
    return any(p.match(value) for p in patterns)


# --- policies and the set -------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    id: str
    effect: str
    actions: tuple[re.Pattern[str], ...]
    roles: frozenset[str]
    condition: _Condition | None
    description: str
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, document: Mapping[str, Any], index: int = 0) -> Policy:
        pid = document.get("id")
        if not isinstance(pid, str) or not pid:
            raise PolicyError(f"policies[{index}]: needs a non-empty string 'id'")
        where = f"policy {pid!r}"
        unknown = set(document) - {"id", "effect", "actions", "roles", "when", "description"}
        if unknown:
            raise PolicyError(f"{where}: unknown fields {sorted(unknown)}")
        effect = document.get("effect", "allow")
        if effect not in ("allow", "deny"):
            raise PolicyError(f"{where}.effect: must be allow or deny, got {effect!r}")
        if "actions" not in document:
            raise PolicyError(f"{where}: needs 'actions'")
        roles = document.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise PolicyError(f"{where}.roles: must be a list of role names")
        when = document.get("when")
        return cls(
            id=pid,
            effect=effect,
            actions=_patterns(document["actions"], f"{where}.actions"),
            roles=frozenset(roles),
            condition=None if when is None else compile_condition(when, f"{where}.when"),
            description=str(document.get("description", "")),
            document=dict(document),
        )

    def applies(self, action: str, roles: frozenset[str], env: _Env) -> bool:
        if not _matches(self.actions, action):
            return False
        if self.roles and not (self.roles & roles):
            return False
        return self.condition is None or self.condition(env)


def _parse_roles(document: Any) -> dict[str, tuple[tuple[re.Pattern[str], ...], tuple[str, ...], list[str]]]:
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise PolicyError("roles: must map role names to permission lists")
    parsed: dict[str, tuple[tuple[re.Pattern[str], ...], tuple[str, ...], list[str]]] = {}
    for name, spec in document.items():
        where = f"roles.{name}"
        if isinstance(spec, list):
            spec = {"permissions": spec}
        if not isinstance(spec, Mapping) or set(spec) - {"permissions", "inherits", "description"}:
            raise PolicyError(f"{where}: must be a permission list or {{permissions, inherits}}")
        permissions = list(spec.get("permissions", []))
        inherits = spec.get("inherits", [])
        if not isinstance(inherits, list):
            raise PolicyError(f"{where}.inherits: must be a list of role names")
        parsed[str(name)] = (
            _patterns(permissions, f"{where}.permissions") if permissions else (),
            tuple(inherits),
            permissions,
        )
    for name, (_, inherits, _) in parsed.items():
        for parent in inherits:
            if parent not in parsed:
                raise PolicyError(f"roles.{name}.inherits: unknown role {parent!r}")
    return parsed


class PolicySet:
    """An immutable, compiled policy document. ``decide`` is synchronous and allocation-light."""

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        document = dict(document or {})
        unknown = set(document) - {"version", "roles", "policies"}
        if unknown:
            raise PolicyError(f"policy document: unknown top-level fields {sorted(unknown)}")
        self.version = int(document.get("version", 0))
        roles = _parse_roles(document.get("roles"))
        self._role_permissions = {name: self._expand(name, roles) for name in roles}
        entries = document.get("policies", [])
        if not isinstance(entries, list):
            raise PolicyError("policies: must be a list")
        policies = [
            Policy.parse(p, i) if isinstance(p, Mapping) else self._bad(i) for i, p in enumerate(entries)
        ]
        ids = [p.id for p in policies]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise PolicyError(f"policies: duplicate ids {sorted(duplicates)}")
        self._deny = tuple(p for p in policies if p.effect == "deny")
        self._allow = tuple(p for p in policies if p.effect == "allow")
        self._document = {
            "version": self.version,
            "roles": {
                name: {"permissions": perms, "inherits": list(inh)} for name, (_, inh, perms) in roles.items()
            },
            "policies": [p.document for p in policies],
        }

    @staticmethod
    def _bad(index: int) -> Policy:
        raise PolicyError(f"policies[{index}]: must be a mapping")

    @staticmethod
    def _expand(
        name: str, roles: Mapping[str, tuple[tuple[re.Pattern[str], ...], tuple[str, ...], list[str]]]
    ) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
        """(granting role, permission as written, compiled) for ``name`` and every role it inherits."""
        seen: list[str] = []
        stack = [name]
        while stack:
            role = stack.pop()
            if role in seen:
                continue  # inheritance cycles are harmless: each role counts once
            seen.append(role)
            stack.extend(roles[role][1])
        return tuple(
            (role, text, pattern)
            for role in seen
            for text, pattern in zip(roles[role][2], roles[role][0], strict=True)
        )

    @classmethod
    def from_yaml(cls, text: str) -> PolicySet:
        import yaml

        return cls(yaml.safe_load(text) or {})

    def to_document(self) -> dict[str, Any]:
        return self._document

    def permissions_of(self, roles: Iterable[str]) -> set[str]:
        return {text for r in roles for _, text, _ in self._role_permissions.get(r, ())}

    def decide(
        self,
        subject: Attributes,
        action: str,
        resource: Attributes | None = None,
        context: Attributes | None = None,
    ) -> Decision:
        raw_roles = subject.get("roles", ())
        roles = (
            frozenset(r for r in raw_roles if isinstance(r, str))
            if isinstance(raw_roles, list | tuple | set | frozenset)
            else frozenset()
        )
        env: _Env = (subject, resource or {}, context or {})
        for policy in self._deny:
            if policy.applies(action, roles, env):
                return Decision(False, policy.description or f"denied by policy {policy.id}", policy.id)
        for role in roles:
            for origin, _, pattern in self._role_permissions.get(role, ()):
                if pattern.match(action):
                    via = f" (inherited from {origin})" if origin != role else ""
                    return Decision(True, f"role {role} may {action}{via}", f"role:{role}")
        for policy in self._allow:
            if policy.applies(action, roles, env):
                return Decision(True, policy.description or f"allowed by policy {policy.id}", policy.id)
        return Decision(False, f"no role or policy allows {action}", None)


# --- the local copy -------------------------------------------------------------------------------


class PolicyReplica(Poller):
    """A local :class:`PolicySet` kept in sync with the security service's ``GET /policies``.

    Polls with ``If-None-Match`` so an unchanged document costs a 304. A failed poll keeps the
    copy it has: decisions go on from the last known policies while the service is down.
    """

    failures = (httpx.HTTPError, ValueError, PolicyError)
    task_name = "edgeway-policy-replica"

    def __init__(
        self,
        url: str,
        *,
        interval: float = 5.0,
        initial: PolicySet | None = None,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(url, interval, client, headers)
        self.policies = initial if initial is not None else PolicySet()
        self.etag: str | None = None
        self.updates = 0
        self._listeners: list[Callable[[PolicySet], None]] = []

    @property
    def version(self) -> int:
        return self.policies.version

    def on_change(self, listener: Callable[[PolicySet], None]) -> None:
        self._listeners.append(listener)

    def decide(
        self,
        subject: Attributes,
        action: str,
        resource: Attributes | None = None,
        context: Attributes | None = None,
    ) -> Decision:
        return self.policies.decide(subject, action, resource, context)

    async def poll(self) -> bool:
        """Poll once; True when a new document was loaded. Raises on transport or parse errors."""
        headers = dict(self._headers)
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        response = await self._http().get(self.url, headers=headers)
        if response.status_code == 304:
            return False
        response.raise_for_status()
        policies = PolicySet(response.json())
        self.policies = policies
        self.etag = response.headers.get("ETag")
        self.updates += 1
        for listener in self._listeners:
            listener(policies)
        return True

    def describe_copy(self) -> str:
        return f"policies version {self.version}"

    async def start(self) -> None:
        await self.poll_safely()
        self.start_polling()
