"""The progressive strangler through a real gateway and real backends: steps advanced on the
schedule, rollbacks when the new side answers 500s (to the last good step, or to the start), an
operator's pause, advance and rollback, and the state in the metrics."""

from __future__ import annotations

import asyncio

import pytest
from strangler_helpers import Load, run_of, strangler_route, until
from traffic_helpers import Shadow, instances, running, servers

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.gateway.traffic.strangler import StranglerCommandError
from edgeway.http.exchange import Exchange


def services(old: Shadow, new: Shadow) -> dict[str, object]:
    return {"old": instances(old), "new": instances(new)}


async def test_a_rule_advances_step_by_step_on_its_schedule_to_the_new_side() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        cfg = {"services": services(old, new), "routes": [strangler_route(step_duration="300ms")]}
        async with running(cfg) as (port, gw), Load(port) as load:
            run = run_of(gw)
            seen: list[float] = []

            def watch() -> bool:
                if not seen or seen[-1] != run.percent:
                    seen.append(run.percent)
                return run.state is not None and run.state.status == "complete"

            await until(watch, 15, "the rule completes")
            done = len(load.answers)
            await until(lambda: len(load.answers) >= done + 50, 5, "50 more requests")
            tail = load.counts(after=done + 1)  # the one in flight at the change may go either way
    assert seen == [10.0, 50.0, 100.0]
    assert run.state is not None
    assert run.state.step == 2
    assert tail == {"new": sum(tail.values())}  # complete: everything on the new side
    assert "within the limits" in run.state.reason


async def test_a_new_side_answering_500s_is_rolled_back_to_the_start_within_seconds() -> None:
    old, new = Shadow("old"), Shadow("new", status=500)
    async with servers(old, new):
        cfg = {"services": services(old, new), "routes": [strangler_route(steps=[50, 100])]}
        async with running(cfg) as (port, gw), Load(port) as load:
            run = run_of(gw)
            took = await until(lambda: run.percent == 0.0, 10, "the rollback")
            settled = len(load.answers)
            await until(lambda: len(load.answers) >= settled + 50, 5, "50 more requests")
            after = load.counts(after=settled + 1)
    assert took < 5, took
    assert run.state is not None
    assert (run.state.status, run.state.step, run.state.rollbacks) == ("rolled_back", -1, 1)
    assert "error rate" in run.state.reason
    assert "rolled back from 50%" in run.state.reason
    assert after == {"old": sum(after.values())}  # and it stays there: no advance after a rollback


async def test_a_rollback_goes_to_the_last_good_step_when_the_new_side_fails_later() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        rule = strangler_route(steps=[10, 50, 100], step_duration="300ms")
        async with running({"services": services(old, new), "routes": [rule]}) as (port, gw), Load(port):
            run = run_of(gw)
            await until(lambda: run.percent == 50.0, 10, "the second step")
            new.status = 500  # the new side starts failing at 50 %
            await until(lambda: run.state is not None and run.state.status == "rolled_back", 10, "a rollback")
            assert run.percent == 10.0  # the last good step, held
            await asyncio.sleep(0.5)  # longer than a step: held, not advanced
            assert run.describe()["status"] == "rolled_back"
            assert run.percent in (10.0, 0.0)  # held, or further back if 500s at 10 % breach again


async def test_rollback_to_start_skips_the_good_steps() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        rule = strangler_route(steps=[10, 50, 100], step_duration="300ms", rollback_to="start")
        async with running({"services": services(old, new), "routes": [rule]}) as (port, gw), Load(port):
            run = run_of(gw)
            await until(lambda: run.percent == 50.0, 10, "the second step")
            new.status = 503
            await until(lambda: run.state is not None and run.state.status == "rolled_back", 10, "a rollback")
    assert run.percent == 0.0


class Slow(Shadow):
    """A backend that takes 30 ms to answer."""

    async def handle(self, ex: Exchange) -> None:
        await asyncio.sleep(0.03)
        await super().handle(ex)


async def test_a_slower_new_side_is_rolled_back_on_latency() -> None:
    old, new = Shadow("old"), Slow("new")
    async with servers(old, new):
        rule = strangler_route(steps=[50, 100], max_latency_ratio=2, latency_slack="5ms")
        async with running({"services": services(old, new), "routes": [rule]}) as (port, gw), Load(port):
            run = run_of(gw)
            await until(lambda: run.percent == 0.0, 10, "the rollback")
    assert run.state is not None
    assert "mean latency" in run.state.reason


async def test_an_operator_pauses_advances_resumes_and_rolls_back() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        rule = strangler_route(steps=[10, 50, 100], step_duration="200ms", start="paused")
        async with running({"services": services(old, new), "routes": [rule]}) as (port, gw), Load(port):
            run = run_of(gw)
            await until(lambda: run.state is not None, 5, "the first check")
            assert (run.describe()["status"], run.percent) == ("paused", 0.0)
            await asyncio.sleep(0.4)  # two step durations: a paused rule does not move
            assert run.percent == 0.0
            state = await run.command("advance")
            assert (state.status, state.step, run.percent) == ("paused", 0, 10.0)
            await run.command("resume")
            await until(lambda: run.percent == 50.0, 5, "the schedule resumes")
            await run.command("pause")
            held = run.percent
            await asyncio.sleep(0.4)
            assert run.percent == held
            state = await run.command("rollback")
            assert (state.status, state.step, run.percent) == ("rolled_back", -1, 0.0)
            assert state.reason == "rolled back by an operator"
            with pytest.raises(StranglerCommandError, match="unknown command"):
                await run.command("jump")
            await run.command("resume")  # from the start: the first step at the next check
            await until(lambda: run.percent == 10.0, 5, "the first step after a resume")
            await run.command("pause")
            await run.command("advance")
            state = await run.command("advance")
            assert (state.status, run.percent) == ("complete", 100.0)
            with pytest.raises(StranglerCommandError, match="last step"):
                await run.command("advance")


async def test_the_state_is_in_the_metrics() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        rule = strangler_route(steps=[25, 100], start="paused")
        async with running({"services": services(old, new), "routes": [rule]}) as (_, gw):
            run = run_of(gw)
            await until(lambda: run.state is not None, 5, "the first check")
            await run.command("advance")
            text = gw.env.metrics.exposition()[0].decode()
    assert 'edgeway_strangler_percent{route="profile"} 25.0' in text
    assert 'edgeway_strangler_step{route="profile"} 1.0' in text
    assert 'edgeway_strangler_status{route="profile",status="paused"} 1.0' in text
    assert 'edgeway_strangler_status{route="profile",status="running"} 0.0' in text
    assert 'edgeway_traffic_weight_percent{route="profile",service="new"} 25.0' in text


def test_rule_mistakes_are_refused_with_their_place() -> None:
    base = {
        "services": {
            "old": {"instances": ["http://127.0.0.1:9"]},
            "new": {"instances": ["http://127.0.0.1:9"]},
        }
    }
    bad = strangler_route()
    bad["proxy"]["service"] = "old"
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "routes": [bad]})
    assert "routes[0].proxy.strangler: a strangler names its services" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "routes": [strangler_route(new="old")]})
    assert "routes[0].proxy.strangler.new: the new service must differ" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "routes": [strangler_route(new="gone")]})
    assert "unknown service 'gone'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "routes": [strangler_route(steps=[50, 10])]})
    assert "steps must increase" in str(caught.value)
    assert "last step must be 100" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        validate_config({**base, "workers": 2, "routes": [strangler_route()]})
    assert "needs a shared store" in str(caught.value)
    validate_config(
        {
            **base,
            "workers": 2,
            "strangler_store": {"backend": "file", "path": "/tmp/x.json"},
            "routes": [strangler_route()],
        }
    )
