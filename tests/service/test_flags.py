from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest

from conftest import require
from edgeway.service.config_store import ConfigStore
from edgeway.service.flags import FlagRule, Flags, bucket_of


def test_unknown_flag_is_off_unless_default_given() -> None:
    flags = Flags({})
    assert not flags.enabled("nope")
    assert flags.enabled("nope", default=True)


def test_boolean_flag_switches_for_everybody() -> None:
    flags = Flags({"flags.a": True, "flags.b": False, "other": True})
    assert flags.enabled("a", key="u1")
    assert not flags.enabled("b", key="u1")
    assert not flags.enabled("other")


def test_percentage_rollout_is_stable_per_key_and_close_to_target() -> None:
    flags = Flags({"flags.checkout": {"percentage": 30}})
    keys = [f"user-{i}" for i in range(10_000)]
    first = [flags.enabled("checkout", key=k) for k in keys]
    second = [Flags({"flags.checkout": {"percentage": 30}}).enabled("checkout", key=k) for k in keys]
    assert first == second
    share = sum(first) / len(keys)
    assert 0.25 <= share <= 0.35


def test_raising_the_percentage_only_adds_keys() -> None:
    keys = [f"k{i}" for i in range(2000)]
    low = {k for k in keys if Flags({"flags.f": {"percentage": 10}}).enabled("f", key=k)}
    high = {k for k in keys if Flags({"flags.f": {"percentage": 50}}).enabled("f", key=k)}
    assert low < high


def test_bucket_depends_on_the_flag_name_too() -> None:
    keys = [f"k{i}" for i in range(100)]
    assert [bucket_of("a", k) for k in keys] != [bucket_of("b", k) for k in keys]


def test_percentage_without_a_key_is_off() -> None:
    assert not Flags({"flags.f": {"percentage": 100}}).enabled("f")


def test_role_targeting_overrides_percentage_and_restricts_otherwise() -> None:
    flags = Flags({"flags.beta": {"roles": ["beta"]}, "flags.mix": {"roles": ["staff"], "percentage": 0}})
    assert flags.enabled("beta", roles=["beta", "x"])
    assert not flags.enabled("beta", roles=["x"])
    assert flags.enabled("mix", key="u", roles=["staff"])
    assert not flags.enabled("mix", key="u", roles=[])


def test_disabled_flag_is_off_even_for_targeted_roles() -> None:
    flags = Flags({"flags.f": {"enabled": False, "roles": ["beta"]}})
    assert not flags.enabled("f", roles=["beta"])


@pytest.mark.parametrize(
    "value",
    [{"percentage": 150}, {"percentage": True}, {"roles": "beta"}, {"enabled": "yes"}, {"colour": 1}, 3],
)
def test_invalid_rules_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="flag 'f'"):
        FlagRule.parse("f", value)


def test_invalid_update_keeps_the_last_good_rule() -> None:
    flags = Flags({"flags.f": True})
    flags._on_change("flags.f", {"percentage": "lots"})
    assert flags.enabled("f")


async def test_flags_follow_live_updates_from_nats_kv(tmp_path: Path) -> None:
    require("nats")
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    name = f"flags_{uuid.uuid4().hex[:12]}"
    kv = await js.create_key_value(bucket=name)
    try:
        await kv.put("flags.dark-mode", b"false")
        store = ConfigStore(name, cache_dir=tmp_path)
        await store.start()
        flags = Flags(store)
        assert not flags.enabled("dark-mode", key="u1")
        await kv.put("flags.dark-mode", b'{"enabled": true}')
        async with asyncio.timeout(5):
            while not flags.enabled("dark-mode", key="u1"):
                await asyncio.sleep(0.02)
        await kv.delete("flags.dark-mode")
        async with asyncio.timeout(5):
            while "dark-mode" in flags.rules():
                await asyncio.sleep(0.02)
        flags.close()
        await store.stop()
    finally:
        await js.delete_key_value(name)
        await nc.close()
