"""Breaker and health states, polled every few seconds.

Three sources, each already there: the supervisor's view of every process (running, restarting,
how many restarts), each process's readiness URL (what the supervisor waited for at start), and
each edge's admin ``/metrics`` — the breaker state and the balancer's view of every instance of
every service behind it (``edgeway_breaker_state``, ``edgeway_instance_available``; see
:mod:`edgeway.resilience.telemetry`), read with the demo's admin token. From the same admin API,
``GET /strangler``: where each progressive strangler rule stands (the account page's move from
the monolith to the profile service), so the control room shows it moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["BREAKER_STATES", "HealthBoard", "ProcessView", "parse_edge_metrics", "strangler_rows"]

BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}


@dataclass(frozen=True, slots=True)
class ProcessView:
    name: str
    role: str
    state: str
    restarts: int


def parse_edge_metrics(text: str, instance_names: Mapping[int, str]) -> list[dict[str, Any]]:
    """One row per (service, instance) an edge guards: breaker state and availability.
    ``instance_names`` names an instance by its port (``catalog-2``); ``*`` is the service's
    own breaker."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("edgeway_breaker_state", "edgeway_instance_available"):
            continue
        for sample in family.samples:
            service = sample.labels.get("service", "?")
            instance = sample.labels.get("instance", "?")
            _, _, port = instance.rpartition(":")
            row = rows.setdefault(
                (service, instance),
                {
                    "service": service,
                    "instance": instance,
                    "process": instance_names.get(int(port)) if port.isdigit() else None,
                    "breaker": None,
                    "available": None,
                },
            )
            if family.name == "edgeway_breaker_state":
                row["breaker"] = BREAKER_STATES.get(int(sample.value), str(sample.value))
            else:
                row["available"] = sample.value >= 1
    return sorted(rows.values(), key=lambda r: (r["service"], r["instance"]))


# What the control room shows of a rule from the admin API's ``GET /strangler`` (the rest —
# each side's outcomes, the store's version — is there for operators who ask the edge).
_STRANGLER_KEYS = ("route", "old", "new", "steps", "step", "percent", "status", "reason", "rollbacks")


def strangler_rows(payload: Any) -> list[dict[str, Any]]:
    """The rules of an edge's ``GET /strangler`` answer, trimmed to what the control room shows
    (ValueError for an answer that is not one)."""
    rules = payload.get("rules") if isinstance(payload, dict) else None
    if not isinstance(rules, list):
        raise ValueError("not an edgeway /strangler answer: no 'rules' list")
    return [{key: rule.get(key) for key in _STRANGLER_KEYS} for rule in rules if isinstance(rule, dict)]


class HealthBoard:
    def __init__(
        self,
        *,
        processes: Callable[[], list[ProcessView]],
        ready_urls: Mapping[str, str],
        edge_admin_urls: Mapping[str, str],
        admin_token: str,
        instance_names: Mapping[int, str],
        interval: float = 2.0,
    ) -> None:
        self.processes = processes
        self.ready_urls = dict(ready_urls)
        self.edge_admin_urls = dict(edge_admin_urls)
        self.admin_token = admin_token
        self.instance_names = dict(instance_names)
        self.interval = interval
        self.ready: dict[str, bool] = {}
        self.breakers: dict[str, list[dict[str, Any]]] = {}
        self.edge_errors: dict[str, str] = {}
        self.strangler: dict[str, list[dict[str, Any]]] = {}  # by edge: its rules, trimmed
        self.updated = 0.0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=1.5) as http:
            while True:
                await self.poll(http)
                await asyncio.sleep(self.interval)

    async def poll(self, http: httpx.AsyncClient) -> None:
        async def ready(name: str, url: str) -> None:
            try:
                self.ready[name] = (await http.get(url)).status_code == 200
            except httpx.HTTPError:
                self.ready[name] = False

        headers = {"Authorization": f"Bearer {self.admin_token}"}

        async def edge(name: str, admin: str) -> None:
            try:
                response, rules = await asyncio.gather(
                    http.get(admin + "/metrics", headers=headers),
                    http.get(admin + "/strangler", headers=headers),
                )
                response.raise_for_status()
                rules.raise_for_status()
            except httpx.HTTPError as exc:
                self.edge_errors[name] = f"{type(exc).__name__}: {exc}"
                return
            self.edge_errors.pop(name, None)
            with contextlib.suppress(ValueError):  # a scrape cut short: keep the last good one
                self.breakers[name] = parse_edge_metrics(response.text, self.instance_names)
            with contextlib.suppress(ValueError):
                self.strangler[name] = strangler_rows(rules.json())

        await asyncio.gather(
            *(ready(n, u) for n, u in self.ready_urls.items()),
            *(edge(n, u) for n, u in self.edge_admin_urls.items()),
        )
        self.updated = time.time()

    def snapshot(self) -> dict[str, Any]:
        return {
            "processes": [
                {
                    "name": p.name,
                    "role": p.role,
                    "state": p.state,
                    "restarts": p.restarts,
                    "ready": self.ready.get(p.name),
                }
                for p in self.processes()
            ],
            "breakers": self.breakers,
            "strangler": self.strangler,
            "edge_errors": self.edge_errors,
            "updated": self.updated,
        }
