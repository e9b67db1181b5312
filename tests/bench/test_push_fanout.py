"""The push fan-out benchmark runs end to end at a tiny size."""

from __future__ import annotations

from bench import push_fanout


def test_push_fanout_delivers_every_message_to_every_client() -> None:
    result = push_fanout.run(json=False, clients=3, messages=50)
    assert result["deliveries"] == 150
    assert result["deliveries_per_s"] > 0
    assert result["machine"]["cores"]
