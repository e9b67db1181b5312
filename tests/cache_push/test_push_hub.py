"""The push hub, sessions, authorisers, topic patterns and templates, without sockets."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cache_push_helpers import running_gateway
from push_helpers import LOCAL, hub, push_cfg

from edgeway.gateway.actions.push.authorise import RuleAuthoriser, compile_rules
from edgeway.gateway.actions.push.config import PushAction, PushSettings, PushTopicRule
from edgeway.gateway.actions.push.hub import PushHub
from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.session import Channel, Ending, Refusal, Session
from edgeway.gateway.actions.push.topics import TopicPatternError, parse_topic_pattern, parse_topic_template
from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.pipeline import Identity
from edgeway.observability.metrics import Metrics


def make_hub(**settings: Any) -> PushHub:
    return PushHub(PushSettings.model_validate(settings), Metrics("t"))


def who(subject: str, *roles: str, **claims: Any) -> Identity:
    return Identity(subject, None, frozenset(roles), frozenset(), {"sub": subject, **claims}, "t")


def channel(h: PushHub, topics: list[dict[str, Any]] | None = None, **action: Any) -> Channel:
    rules = topics or [{"pattern": "{a}", "allow": "anyone"}, {"pattern": "{a}/{b}", "allow": "anyone"}]
    return Channel.build("push", PushAction.model_validate({"topics": rules, **action}), h)


@pytest.mark.parametrize(
    ("topic", "data", "event", "reason"),
    [
        ("bad topic", {}, "message", "topic"),
        ("a//b", {}, "message", "topic"),
        ("x" * 300, {}, "message", "topic"),
        ("news", {}, "bad event\n", "event"),
        ("news", b"{not json", "message", "not-json"),
        ("news", object(), "message", "not-json"),
        ("news", {"pad": "x" * 2000}, "message", "too-large"),
    ],
)
def test_the_hub_drops_what_it_cannot_push(topic: str, data: Any, event: str, reason: str) -> None:
    h = make_hub(max_message_bytes=1024)
    assert h.publish(topic, data, event=event) is None
    assert h.dropped.labels(reason)._value.get() == 1


def test_an_unsafe_id_is_replaced_and_json_bytes_are_kept_as_they_came() -> None:
    h = make_hub()
    message = h.publish("news", b'{"a": 1}', id="bad\nid")
    assert message is not None
    assert message.id != "bad\nid"
    assert len(message.id) == 26
    assert message.data == b'{"a": 1}'
    assert message.payload == {"a": 1}


def test_the_replay_log_is_bounded_per_topic_in_bytes_and_in_time() -> None:
    h = make_hub(replay_messages=3, replay_bytes=60, replay_ttl=60)
    for n in range(5):
        h.publish("a", {"n": n})  # 8 bytes each
    assert [m.payload["n"] for m in h.replay("a", None)] == [2, 3, 4]
    for n in range(3):
        h.publish("b", {"n": n})
    h.publish("c", {"big": "x" * 40})  # 52 bytes: pushes out the least recently used topics
    assert h.replay("a", None) == []
    assert h.replay("b", None) == []
    assert len(h.replay("c", None)) == 1
    old = h.publish("d", {"n": 1})
    assert old is not None
    old.time -= 61
    assert h.replay("d", None) == []


def test_replay_after_a_sequence() -> None:
    h = make_hub()
    ids = [m.id for m in (h.publish("a", {"n": n}) for n in range(4)) if m is not None]
    seq = h.seq_of(["b", "a"], ids[1])
    assert seq is not None
    assert [m.id for m in h.replay("a", seq)] == ids[2:]
    assert h.seq_of(["a"], "unknown") is None


def test_session_queue_overflow_counts_live_messages_only() -> None:
    h = make_hub()
    s = Session(channel(h, queue_size=2), None, "websocket")
    for n in range(5):
        h.publish("t", {"n": n})
    found = s.check("t")
    assert not isinstance(found, Refusal)
    s.subscribe("t", found[0], None, replay=True)
    assert len(s.urgent) == 5
    h.publish("t", {"n": 5})
    h.publish("t", {"n": 6})
    assert s.active()
    h.publish("t", {"n": 7})
    assert s.ending is Ending.OVERFLOW
    assert not s.pending()
    assert h.subscribers("t") == 0
    meter = h.meters.of("websocket")
    assert meter.overflows._value.get() == 1
    # the message that overflowed, the 2 queued live ones and the 5 replayed ones never went out
    assert meter.discarded._value.get() == 8
    assert h.meters.endings.labels("websocket", "overflow")._value.get() == 1
    assert meter.connections._value.get() == 0
    assert h.meters.of("sse").overflows._value.get() == 0


def test_messages_taken_are_counted_once_per_wake_up_and_connections_while_open() -> None:
    h = make_hub()
    s = Session(channel(h), None, "sse")
    meter = h.meters.of("sse")
    assert meter.connections._value.get() == 1
    found = s.check("t")
    assert not isinstance(found, Refusal)
    s.subscribe("t", found[0], None, replay=False)
    for n in range(3):
        h.publish("t", {"n": n})
    assert s.take() is not None
    assert meter.sent._value.get() == 0  # added when the writer has taken everything
    assert list(iter(s.take, None)) != []
    assert meter.sent._value.get() == 3
    assert s.take() is None
    assert meter.sent._value.get() == 3
    s.end(Ending.CLIENT)
    s.detach()  # the transports detach again in their finally: counted once
    assert meter.connections._value.get() == 0
    assert h.meters.endings.labels("sse", "client")._value.get() == 1
    assert h.meters.of("websocket").sent._value.get() == 0


def test_an_unknown_transport_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown push transport 'grpc'"):
        make_hub().meters.of("grpc")


def test_unsubscribing_drops_what_was_queued_for_the_topic() -> None:
    h = make_hub()
    s = Session(channel(h), None, "sse")
    for topic in ("a", "b"):
        found = s.check(topic)
        assert not isinstance(found, Refusal)
        s.subscribe(topic, found[0], None, replay=False)
    h.publish("a", {"n": 1})
    h.publish("b", {"n": 2})
    h.publish("a", {"n": 3})
    assert s.unsubscribe("a")
    assert not s.unsubscribe("a")
    taken = [s.take() for _ in range(2)]
    assert [m.topic for m in taken if isinstance(m, PushMessage)] == ["b"]
    assert taken[1] is None


def test_a_session_ends_with_the_token() -> None:
    s = Session(channel(make_hub()), who("a", exp=time.time() + 30), "sse")
    left = s.seconds_left()
    assert left is not None
    assert 29 < left <= 30
    assert Session(channel(make_hub()), who("a", exp="soon"), "sse").seconds_left() is None


AUTH_CASES = [
    ({"allow": "anyone"}, None, {}, True),
    ({"allow": "authenticated"}, None, {}, False),
    ({"allow": "authenticated"}, who("a"), {}, True),
    ({"allow": "roles", "roles": ["ops", "admin"]}, who("a", "admin"), {}, True),
    ({"allow": "roles", "roles": ["ops"]}, who("a", "admin"), {}, False),
    ({"allow": "owner", "owner_param": "p"}, who("a"), {"p": "a"}, True),
    ({"allow": "owner", "owner_param": "p"}, who("a"), {"p": "b"}, False),
    ({"allow": "owner", "owner_param": "p", "owner_claim": "org"}, who("a", org=7), {"p": "7"}, True),
    ({"allow": "owner", "owner_param": "p", "owner_claim": "org"}, who("a"), {"p": "None"}, False),
    ({"allow": "owner", "owner_param": "p", "owner_claim": "org"}, who("a", org=[7]), {"p": "[7]"}, False),
    ({"allow": "owner", "owner_field": "owner"}, who("a"), {}, True),  # decided per message
    ({"allow": "owner", "owner_field": "owner"}, None, {}, False),
]


@pytest.mark.parametrize(("rule", "identity", "params", "allowed"), AUTH_CASES)
def test_rule_authoriser_may_subscribe(
    rule: dict[str, Any], identity: Identity | None, params: dict[str, str], allowed: bool
) -> None:
    pattern = "x/{p}" if "owner_param" in rule else "x"
    auth = RuleAuthoriser.from_rule(PushTopicRule.model_validate({"pattern": pattern, **rule}))
    assert auth.may_subscribe(identity, "x", params) is allowed


@pytest.mark.parametrize(
    ("data", "allowed"),
    [
        (b'{"job": {"owner": "a"}}', True),
        (b'{"job": {"owner": "b"}}', False),
        (b'{"job": {"owner": true}}', False),
        (b'{"job": {}}', False),
        (b'{"job": "a"}', False),
        (b"[1]", False),
    ],
)
def test_rule_authoriser_may_receive_by_a_dotted_owner_field(data: bytes, allowed: bool) -> None:
    rule = PushTopicRule.model_validate({"pattern": "j/{id}", "allow": "owner", "owner_field": "job.owner"})
    auth = RuleAuthoriser.from_rule(rule)
    message = PushMessage("1", "j/1", "message", data, 0.0)
    assert auth.may_receive(who("a"), message) is allowed
    assert auth.may_receive(None, message) is False


def test_custom_authorisers_are_loaded_and_must_have_both_methods() -> None:
    (rule,) = compile_rules(
        [
            PushTopicRule.model_validate(
                {"pattern": "j/{n}", "allow": "custom", "authoriser": "push_helpers:EvenJobs"}
            )
        ]
    )
    assert rule.checks_messages
    assert rule.authoriser.may_subscribe(None, "j/2", {"n": "2"})
    assert not rule.authoriser.may_subscribe(None, "j/3", {"n": "3"})
    for path, message in [
        ("push_helpers:Nope", "cannot be loaded"),
        ("push_helpers:hub", "needs may_subscribe"),
    ]:
        bad = PushTopicRule.model_validate({"pattern": "j", "allow": "custom", "authoriser": path})
        with pytest.raises(GatewayError, match=message):
            compile_rules([bad])


async def test_python_sources_named_in_the_config_publish_into_the_hub() -> None:
    cfg = push_cfg(settings={"sources": ["push_helpers:LOCAL"]})
    assert LOCAL.publish("news", {"before": "start"}) is None
    async with running_gateway(cfg) as g:
        message = LOCAL.publish("news", {"n": 1}, event="hello")
        assert message is not None
        assert hub(g).replay("news", None) == [message]
    assert LOCAL.publish("news", {"after": "stop"}) is None


@pytest.mark.parametrize(
    ("pattern", "topic", "params"),
    [
        ("orders/{id}", "orders/42", {"id": "42"}),
        ("orders/{id}", "orders/42/x", None),
        ("orders/{id}", "orders", None),
        ("users/{u}/jobs/{j}", "users/a.b/jobs/x:1", {"u": "a.b", "j": "x:1"}),
        ("news", "news", {}),
        ("news", "News", None),
    ],
)
def test_topic_patterns(pattern: str, topic: str, params: dict[str, str] | None) -> None:
    assert parse_topic_pattern(pattern).match(topic) == params


@pytest.mark.parametrize("pattern", ["", "a//b", "a/{x}/{x}", "a/b{x}", "a b", "/a", "{1x}", "a/" + "b/" * 8])
def test_bad_topic_patterns(pattern: str) -> None:
    with pytest.raises(TopicPatternError):
        parse_topic_pattern(pattern)


@pytest.mark.parametrize(
    ("template", "data", "topic"),
    [
        ("jobs/{job_id}", {"job_id": "j1"}, "jobs/j1"),
        ("jobs/{job_id}", {"job_id": 7}, "jobs/7"),
        ("orders/{order.id}/status", {"order": {"id": "o9"}}, "orders/o9/status"),
        ("t/{a}-{b}", {"a": "x", "b": "y"}, "t/x-y"),
        ("jobs/{job_id}", {}, None),
        ("jobs/{job_id}", {"job_id": "a/b"}, None),  # a value may not add segments
        ("jobs/{job_id}", {"job_id": True}, None),
        ("jobs/{job_id}", {"job_id": {"x": 1}}, None),
        ("jobs/{job_id}", [1], None),
    ],
)
def test_topic_templates(template: str, data: Any, topic: str | None) -> None:
    assert parse_topic_template(template).render(data) == topic


@pytest.mark.parametrize("template", ["jobs/{", "jobs//{id}", "jobs/{id}}", "a b/{x}"])
def test_bad_topic_templates(template: str) -> None:
    with pytest.raises(TopicPatternError):
        parse_topic_template(template)
