"""Who may subscribe to a topic, and who receives which message.

A route's ``topics`` rules are tried in order; the first whose pattern matches the topic decides.
A topic no rule matches is refused. Each rule is an :class:`Authoriser`: ``may_subscribe`` runs
once when a client subscribes, ``may_receive`` for every message when the rule looks inside
messages (``owner_field``) — otherwise it is skipped (``checks_messages`` is False).

The built-in :class:`RuleAuthoriser` implements ``owner``, ``authenticated``, ``anyone`` and
``roles``. ``owner`` compares the caller's claim (``sub`` by default, i.e. the token subject)
with a topic parameter (``users/{user}/...``: decided at subscribe time) and/or a field of each
message (``jobs/{id}`` whose messages carry ``"owner": "<sub>"``: decided per message, so a
client subscribed to someone else's job id receives nothing of it). ``custom`` loads any object
with the same two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from edgeway.gateway.actions.push.config import PushTopicRule
from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.sources import import_object
from edgeway.gateway.actions.push.topics import TopicPattern, parse_topic_pattern
from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.pipeline import Identity


class Authoriser(Protocol):
    def may_subscribe(self, identity: Identity | None, topic: str, params: Mapping[str, str]) -> bool: ...

    def may_receive(self, identity: Identity | None, message: PushMessage) -> bool: ...


def claim_of(identity: Identity, claim: str) -> str | None:
    """The identity's value of ``claim`` as text (``sub`` is the subject)."""
    if claim == "sub":
        return identity.subject
    value = identity.claims.get(claim)
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


@dataclass(frozen=True, slots=True)
class RuleAuthoriser:
    allow: str
    owner_param: str | None
    owner_field: tuple[str, ...] | None
    owner_claim: str
    roles: frozenset[str]

    @classmethod
    def from_rule(cls, rule: PushTopicRule) -> RuleAuthoriser:
        return cls(
            rule.allow,
            rule.owner_param,
            tuple(rule.owner_field.split(".")) if rule.owner_field else None,
            rule.owner_claim,
            frozenset(rule.roles),
        )

    def may_subscribe(self, identity: Identity | None, topic: str, params: Mapping[str, str]) -> bool:
        if self.allow == "anyone":
            return True
        if identity is None:
            return False
        if self.allow == "roles":
            return not self.roles.isdisjoint(identity.roles)
        if self.allow == "owner" and self.owner_param is not None:
            owner = claim_of(identity, self.owner_claim)
            return owner is not None and params.get(self.owner_param) == owner
        return True  # authenticated, or owner decided per message

    def may_receive(self, identity: Identity | None, message: PushMessage) -> bool:
        if self.owner_field is None:
            return True
        if identity is None:
            return False
        owner = claim_of(identity, self.owner_claim)
        value = message.field(self.owner_field)
        if owner is None or value is None or isinstance(value, bool | dict | list):
            return False
        return str(value) == owner


@dataclass(frozen=True, slots=True)
class TopicRule:
    pattern: TopicPattern
    authoriser: Authoriser
    checks_messages: bool
    needs_identity: bool


def load_authoriser(path: str) -> Authoriser:
    """``module:attribute``: an object with both methods, or a class to instantiate."""
    found = import_object(path, "push authoriser")
    if isinstance(found, type):
        found = found()
    if not (
        callable(getattr(found, "may_subscribe", None)) and callable(getattr(found, "may_receive", None))
    ):
        raise GatewayError(f"push authoriser {path!r} needs may_subscribe() and may_receive() methods")
    return cast(Authoriser, found)


def compile_rules(rules: list[PushTopicRule]) -> tuple[TopicRule, ...]:
    out: list[TopicRule] = []
    for rule in rules:
        if rule.allow == "custom":
            assert rule.authoriser is not None  # checked by the schema
            out.append(
                TopicRule(parse_topic_pattern(rule.pattern), load_authoriser(rule.authoriser), True, False)
            )
        else:
            auth = RuleAuthoriser.from_rule(rule)
            out.append(
                TopicRule(
                    parse_topic_pattern(rule.pattern),
                    auth,
                    auth.owner_field is not None,
                    rule.allow != "anyone",
                )
            )
    return tuple(out)


def find_rule(rules: tuple[TopicRule, ...], topic: str) -> tuple[TopicRule, dict[str, str]] | None:
    for rule in rules:
        params = rule.pattern.match(topic)
        if params is not None:
            return rule, params
    return None
