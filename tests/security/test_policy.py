"""The policy engine: RBAC, the two ABAC examples, deny-overrides, the safe rule language."""

from __future__ import annotations

from typing import Any

import pytest

from edgeway.security.errors import PolicyError
from edgeway.security.policy import PolicySet, compile_condition

SHOP = """
version: 3
roles:
  admin: ["*"]
  customer: ["catalog:read", "orders:create"]
  support:
    permissions: ["tickets:*"]
    inherits: [customer]
policies:
  - id: owner-reads-own-order
    effect: allow
    actions: ["orders:read"]
    when: {eq: [resource.owner, subject.sub]}
  - id: support-reads-region
    effect: allow
    actions: ["orders:read"]
    roles: [support]
    when: {eq: [subject.region, resource.region]}
  - id: suspended-do-nothing
    effect: deny
    description: suspended accounts are read-only for nobody
    actions: ["*"]
    when: {eq: [subject.status, suspended]}
"""


@pytest.fixture
def policies() -> PolicySet:
    return PolicySet.from_yaml(SHOP)


def alice(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "roles": ["customer"], **extra}


def test_rbac_grants_a_role_its_permissions(policies: PolicySet) -> None:
    decision = policies.decide(alice(), "orders:create")
    assert decision.allowed
    assert decision.policy_id == "role:customer"
    assert not policies.decide(alice(), "orders:delete")


def test_rbac_wildcards_and_inheritance(policies: PolicySet) -> None:
    assert policies.decide({"sub": "root", "roles": ["admin"]}, "anything:at-all")
    support = {"sub": "sam", "roles": ["support"]}
    assert policies.decide(support, "tickets:close")
    inherited = policies.decide(support, "catalog:read")
    assert inherited.allowed
    assert "inherited from customer" in inherited.reason


def test_owner_may_read_own_order_and_not_anothers(policies: PolicySet) -> None:
    own = policies.decide(alice(), "orders:read", {"id": "o1", "owner": "alice"})
    assert own.allowed
    assert own.policy_id == "owner-reads-own-order"
    other = policies.decide(alice(), "orders:read", {"id": "o2", "owner": "bob"})
    assert not other.allowed
    assert other.policy_id is None
    assert "orders:read" in other.reason


def test_missing_attributes_never_compare_equal(policies: PolicySet) -> None:
    # No owner on the resource and no sub on the subject must not read as "owner == sub".
    assert not policies.decide({"roles": ["customer"]}, "orders:read", {"id": "o3"})


def test_support_may_read_orders_of_their_region_only(policies: PolicySet) -> None:
    sam = {"sub": "sam", "roles": ["support"], "region": "eu"}
    assert (
        policies.decide(sam, "orders:read", {"owner": "bob", "region": "eu"}).policy_id
        == "support-reads-region"
    )
    assert not policies.decide(sam, "orders:read", {"owner": "bob", "region": "us"})
    # The same region but without the support role: the policy's role filter stops it.
    assert not policies.decide(
        {"sub": "eve", "roles": ["customer"], "region": "eu"}, "orders:read", {"region": "eu"}
    )


def test_deny_overrides_role_and_policy_allows(policies: PolicySet) -> None:
    suspended = {"sub": "root", "roles": ["admin"], "status": "suspended"}
    decision = policies.decide(suspended, "catalog:read")
    assert not decision.allowed
    assert decision.policy_id == "suspended-do-nothing"
    assert decision.reason == "suspended accounts are read-only for nobody"
    assert not policies.decide(alice(status="suspended"), "orders:read", {"owner": "alice"})


def test_default_is_deny(policies: PolicySet) -> None:
    assert not PolicySet().decide(alice(), "catalog:read")
    assert not policies.decide({"sub": "x"}, "catalog:read")


@pytest.mark.parametrize(
    ("condition", "env", "expected"),
    [
        ({"ne": ["subject.a", 1]}, ({"a": 2}, {}, {}), True),
        ({"in": ["subject.a", ["x", "y"]]}, ({"a": "y"}, {}, {}), True),
        ({"in": ["subject.a", "context.allowed"]}, ({"a": "z"}, {}, {"allowed": ["x"]}), False),
        ({"contains": ["subject.groups", "ops"]}, ({"groups": ["dev", "ops"]}, {}, {}), True),
        ({"contains": ["subject.email", "@shop.test"]}, ({"email": "a@shop.test"}, {}, {}), True),
        ({"gt": ["resource.amount", 100]}, ({}, {"amount": 150}, {}), True),
        ({"lt": ["resource.amount", 100]}, ({}, {"amount": 150}, {}), False),
        ({"gt": ["resource.amount", 100]}, ({}, {"amount": "150"}, {}), False),
        ({"ge": ["context.hour", 9]}, ({}, {}, {"hour": 9}), True),
        ({"le": ["context.hour", 17]}, ({}, {}, {"hour": 18}), False),
        ({"eq": ["subject.admin", 1]}, ({"admin": True}, {}, {}), False),
        ({"eq": ["subject.org.id", "resource.org_id"]}, ({"org": {"id": 7}}, {"org_id": 7}, {}), True),
        ({"eq": ["subject.name", {"value": "subject.name"}]}, ({"name": "subject.name"}, {}, {}), True),
        ({"and": [{"eq": ["subject.a", 1]}, {"eq": ["subject.b", 2]}]}, ({"a": 1, "b": 2}, {}, {}), True),
        ({"and": [{"eq": ["subject.a", 1]}, {"eq": ["subject.b", 2]}]}, ({"a": 1, "b": 3}, {}, {}), False),
        ({"or": [{"eq": ["subject.a", 1]}, {"eq": ["subject.b", 2]}]}, ({"a": 0, "b": 2}, {}, {}), True),
        ({"not": {"eq": ["subject.a", 1]}}, ({"a": 2}, {}, {}), True),
        ({"exists": "subject.region"}, ({"region": "eu"}, {}, {}), True),
        ({"exists": "subject.region"}, ({}, {}, {}), False),
        ({"ne": ["subject.missing", 1]}, ({}, {}, {}), False),
    ],
)
def test_the_rule_language_operators(condition: Any, env: Any, expected: bool) -> None:
    assert compile_condition(condition)(env) is expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"policies": [{"id": "p", "actions": ["a"], "when": {"eval": ["1", "2"]}}]},
            "unknown operator 'eval'",
        ),
        ({"policies": [{"id": "p", "actions": ["a"], "when": {"eq": ["subject.a"]}}]}, "two operands"),
        (
            {"policies": [{"id": "p", "actions": ["a"], "when": {"eq": [1, 2], "ne": [1, 2]}}]},
            "exactly one operator",
        ),
        ({"policies": [{"id": "p", "actions": ["a"], "effect": "maybe"}]}, "allow or deny"),
        ({"policies": [{"id": "p"}]}, "needs 'actions'"),
        ({"policies": [{"actions": ["a"]}]}, "'id'"),
        ({"policies": [{"id": "p", "actions": ["a"]}, {"id": "p", "actions": ["b"]}]}, "duplicate ids"),
        (
            {"policies": [{"id": "p", "actions": ["a"], "when": {"eq": ["subject..a", 1]}}]},
            "malformed attribute",
        ),
        ({"policies": [{"id": "p", "actions": ["a"], "priority": 1}]}, "unknown fields"),
        ({"roles": {"a": {"permissions": ["x"], "inherits": ["ghost"]}}}, "unknown role 'ghost'"),
        ({"rules": []}, "unknown top-level"),
    ],
)
def test_malformed_documents_name_the_problem(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PolicySet(document)


def test_conditions_never_reach_python_attributes() -> None:
    class Secretive:
        password = "hunter2"

    condition = compile_condition({"eq": ["subject.user.password", "hunter2"]})
    assert condition(({"user": Secretive()}, {}, {})) is False


def test_document_round_trips(policies: PolicySet) -> None:
    again = PolicySet(policies.to_document())
    assert again.version == 3
    assert again.to_document() == policies.to_document()
    assert policies.permissions_of(["support"]) == {"tickets:*", "catalog:read", "orders:create"}
