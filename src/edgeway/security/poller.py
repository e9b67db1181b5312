"""Polling the security service for a local copy (keys, policies, revocations).

The JWKS client, the policy replica and the revocation feed share one lifecycle: fetch at start,
then every ``interval`` in the background; a failed fetch keeps the last good copy (serving stale
keys or policies during an outage of the security service beats failing every request) and is
logged once until a fetch succeeds again.

The interval can change while polling runs (:meth:`Poller.set_interval`): a gateway polls its
revocation feed slowly while revocations are pushed to it and quickly while the push is down.
``on_poll``, when set, hears of every fetch and whether it succeeded (the gateway's metrics).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Mapping

import httpx

from edgeway.tasks import cancel_and_wait

log = logging.getLogger("edgeway.security")


class Poller(abc.ABC):
    #: Errors that mean "this fetch failed, keep the copy"; anything else is a bug and propagates.
    failures: tuple[type[Exception], ...] = (httpx.HTTPError, ValueError)
    task_name = "edgeway-security-poll"

    def __init__(
        self,
        url: str,
        interval: float,
        client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.interval = interval
        self.last_error: str | None = None
        self.on_poll: Callable[[bool], None] | None = None
        self._headers = dict(headers or {})
        self._client = client
        self._owns_client = client is None
        self._task: asyncio.Task[None] | None = None
        self._interval_changed = asyncio.Event()

    @abc.abstractmethod
    async def poll(self) -> object:
        """Fetch once and update the local copy; raise one of ``failures`` when it fails."""

    def describe_copy(self) -> str:
        """What is being kept when a fetch fails, for the log line."""
        return "the last good copy"

    async def poll_safely(self) -> bool:
        """Poll; on a failure keep the copy, note the error and return False."""
        try:
            await self.poll()
        except self.failures as exc:
            if self.last_error is None:
                log.warning("fetching %s failed (%s); keeping %s", self.url, exc, self.describe_copy())
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._polled(False)
            return False
        self.last_error = None
        self._polled(True)
        return True

    def _polled(self, ok: bool) -> None:
        if self.on_poll is not None:
            self.on_poll(ok)

    def set_interval(self, interval: float) -> None:
        """Poll every ``interval`` seconds from now on; the next fetch is ``interval`` from now."""
        if interval != self.interval:
            self.interval = interval
            self._interval_changed.set()

    def start_polling(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval):
                    await self._interval_changed.wait()
            except TimeoutError:
                await self.poll_safely()
            else:
                self._interval_changed.clear()  # wait again, with the new interval

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        return self._client
