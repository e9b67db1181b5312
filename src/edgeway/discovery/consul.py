"""Instances from Consul: the catalog filtered by health (``/v1/health/service/<name>?passing``).

:class:`ConsulSource` watches one service with Consul's *blocking queries*: each request carries
the ``X-Consul-Index`` of the last answer and Consul holds it until the service's entries change
or ``wait`` passes, so a change arrives within a round trip and an idle watch costs one request
per ``wait``. The index rules are Consul's own: reset to 0 when it goes backwards (the cluster
was restored or its leader changed), never below 1, and at least a short pause between two
answers so a flapping service cannot make the watch spin.

An instance's address is its service address, or its node's when the service has none. Only
instances whose every check passes are returned (``passing``), optionally only those with a tag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from edgeway.discovery.errors import DiscoveryError
from edgeway.discovery.source import Backoff, instance_url

__all__ = ["ConsulSource"]

_log = logging.getLogger("edgeway.discovery.consul")

MIN_PAUSE = 0.1  # between two answers of a blocking query
MAX_BACKOFF = 30.0


class ConsulSource:
    def __init__(
        self,
        url: str,
        service: str,
        *,
        tag: str | None = None,
        datacenter: str | None = None,
        token: str | None = None,
        wait: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base = url.rstrip("/")
        self.service = service
        self.tag = tag
        self.datacenter = datacenter
        self.wait = wait
        self._headers = {"X-Consul-Token": token} if token else {}
        # Consul adds up to wait/16 of jitter to a blocking query; the read timeout covers it.
        self._timeout = httpx.Timeout(5.0, read=wait * 1.1 + 5.0)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        shown = f"{service}[{tag}]" if tag else service
        self.description = f"consul {self.base} {shown}"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def fetch(self, index: int = 0) -> tuple[list[str], int]:
        """The passing instances and the answer's index; with ``index`` > 0 this is a blocking
        query that returns when the service changed or ``wait`` passed."""
        params: dict[str, str] = {"passing": "1"}
        if self.tag:
            params["tag"] = self.tag
        if self.datacenter:
            params["dc"] = self.datacenter
        if index > 0:
            params["index"] = str(index)
            params["wait"] = f"{self.wait:g}s"
        try:
            resp = await self._client.get(
                f"{self.base}/v1/health/service/{self.service}",
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise DiscoveryError(self.service, f"{self.description}: {exc!r}") from exc
        if resp.status_code != 200:
            raise DiscoveryError(
                self.service, f"{self.description}: Consul answered {resp.status_code}: {resp.text[:200]}"
            )
        try:
            entries = resp.json()
            new_index = int(resp.headers.get("X-Consul-Index", "0"))
            urls = sorted({_entry_url(entry) for entry in entries})
        except (ValueError, KeyError, TypeError) as exc:
            raise DiscoveryError(self.service, f"{self.description}: unexpected answer: {exc}") from exc
        return urls, new_index

    async def watch(self) -> AsyncIterator[list[str]]:
        last: list[str] | None = None
        index = 0
        backoff = Backoff(self.description, 0.5, MAX_BACKOFF, _log)
        while True:
            try:
                urls, new_index = await self.fetch(index)
            except DiscoveryError as exc:
                index = 0  # the next answer comes at once: there may be news
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            index = 0 if new_index < index else max(new_index, 1)
            if urls != last:
                last = urls
                yield list(urls)
            await asyncio.sleep(MIN_PAUSE)


def _entry_url(entry: dict[str, Any]) -> str:
    service = entry["Service"]
    address = service.get("Address") or entry["Node"]["Address"]
    return instance_url(str(address), int(service["Port"]))
