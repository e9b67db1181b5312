"""The polling lifecycle the JWKS client, the policy replica and the revocation feed share: the
interval changed while polling runs, and the ``on_poll`` hook (the gateway's metrics)."""

from __future__ import annotations

import asyncio

import httpx

from edgeway.security.poller import Poller


class Counting(Poller):
    """A poller whose fetch counts and fails when told to: the behaviour under test is the base
    class's scheduling, not a fetch."""

    def __init__(self, interval: float) -> None:
        super().__init__("http://feed.test/", interval)
        self.polls = 0
        self.failing = False

    async def poll(self) -> None:
        self.polls += 1
        if self.failing:
            raise httpx.ConnectError("refused")


async def wait_for_polls(poller: Counting, count: int, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while poller.polls < count:
            await asyncio.sleep(0.01)


async def test_a_shorter_interval_applies_at_once_not_after_the_long_wait() -> None:
    poller = Counting(interval=3600.0)
    poller.start_polling()
    try:
        await asyncio.sleep(0.05)
        assert poller.polls == 0
        poller.set_interval(0.02)
        await wait_for_polls(poller, 3)  # would take an hour on the old interval
        poller.set_interval(3600.0)
        await asyncio.sleep(0.05)
        settled = poller.polls
        await asyncio.sleep(0.2)
        assert poller.polls == settled  # back on the long interval
    finally:
        await poller.stop()


async def test_on_poll_hears_of_every_fetch_and_whether_it_succeeded() -> None:
    poller = Counting(interval=3600.0)
    heard: list[bool] = []
    poller.on_poll = heard.append
    assert await poller.poll_safely()
    poller.failing = True
    assert not await poller.poll_safely()
    assert poller.last_error == "ConnectError: refused"
    poller.failing = False
    assert await poller.poll_safely()
    assert heard == [True, False, True]
    assert poller.last_error is None
