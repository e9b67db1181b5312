"""The strangler switch: a feature flag that moves a route from the legacy monolith to a new
service, through the gateways' live reload — no restart.

Every edge routes ``/account/profile`` to a service named ``account-profile``; which instances
that name has is the only thing this controller writes, in one small included file::

    # strangler.yaml (included by every edge config)
    services:
      account-profile:
        instances: ["http://127.0.0.1:8108"]     # the legacy monolith, or the profile service

It follows the flag ``strangler.account-profile`` in the config bucket (NATS KV, the same flags
every service reads, switched with ``edgeway demo flag strangler.account-profile on``), rewrites
the file atomically when the target changes, and asks each gateway to reload (``POST /reload``
on its admin port; the gateways' file watch would see the change within its interval anyway).
A gateway validates the new config and swaps it in between requests: requests in flight finish
on the old route, the next ones go to the new service, nothing is dropped.

Why a file and a reload, not a flag lookup per request in the gateway: the route table stays
static and compiled (no per-request flag evaluation on the hot path), every gateway process and
worker converges on the same file, and the switch is visible and auditable as config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgeway.gateway.process.admin_auth import TOKEN_ENV
from edgeway.observability.logs import setup_logging
from edgeway.service import ConfigStore, Flags

__all__ = ["SWITCHES", "StranglerController", "Switch", "render", "write_if_changed"]

log = logging.getLogger("edgeway.demo.strangler")


@dataclass(frozen=True, slots=True)
class Switch:
    flag: str  # without the "flags." prefix
    service: str  # the service name the edges route to
    legacy: str  # process name serving it while the flag is off
    new: str  # process name serving it once the flag is on


SWITCHES = (Switch("strangler.account-profile", "account-profile", "legacy", "profile"),)


def render(targets: dict[str, str]) -> str:
    """The included file: one service per switch, its instance the chosen target URL."""
    lines = [
        "# Written by the strangler controller (edgeway.demo.strangler); do not edit by hand:",
        "# a feature flag decides which implementation serves each of these services.",
        "services:",
    ]
    for service, url in sorted(targets.items()):
        lines += [f"  {service}:", f'    instances: ["{url}"]']
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` atomically when its content differs; True when it was written."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


class StranglerController:
    def __init__(
        self,
        path: Path,
        urls: dict[str, str],
        *,
        flags: Flags,
        reload_urls: list[str],
        admin_token: str | None = None,
    ) -> None:
        self.path = path
        self.urls = urls
        self.flags = flags
        self.reload_urls = reload_urls
        # The gateways' admin token (the demo gives every edge the same one): reload is a write.
        self.reload_headers = {"content-type": "application/json"}
        if admin_token:
            self.reload_headers["authorization"] = f"Bearer {admin_token}"
        self._changed = asyncio.Event()

    def targets(self) -> dict[str, str]:
        return {s.service: self.urls[s.new if self.flags.enabled(s.flag) else s.legacy] for s in SWITCHES}

    def notify(self, key: str, _value: object) -> None:
        if key.startswith("flags.strangler."):
            self._changed.set()

    async def apply(self, *, reload: bool = True) -> bool:
        """Write the file for the current flags; reload the gateways when it changed."""
        targets = self.targets()
        if not write_if_changed(self.path, render(targets)):
            return False
        for switch in SWITCHES:
            chosen = switch.new if targets[switch.service] == self.urls[switch.new] else switch.legacy
            log.info("strangler: %s now served by %s (flag %s)", switch.service, chosen, switch.flag)
        if not reload:
            return True
        async with httpx.AsyncClient(timeout=10.0) as http:
            for url in self.reload_urls:
                try:
                    response = await http.post(url, headers=self.reload_headers)
                except httpx.HTTPError as exc:
                    log.warning("strangler: could not ask %s to reload (its file watch will): %s", url, exc)
                    continue
                if response.status_code >= 400:
                    log.warning("strangler: %s refused the reload: %s", url, response.text[:500])
        return True

    async def run(self, stop: asyncio.Event) -> None:
        # The first file is written before the gateways start (they include it): nobody to reload.
        await self.apply(reload=False)
        while not stop.is_set():
            waiter = asyncio.create_task(self._changed.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._changed.is_set():
                self._changed.clear()
                await self.apply()


async def _main() -> None:
    env = os.environ
    path = Path(env["SHOP_STRANGLER_FILE"])
    host = env.get("SHOP_HOST", "127.0.0.1")
    urls = {
        # SHOP_URL_<NAME>: https:// under `edgeway demo --tls`
        name: env.get("SHOP_URL_" + name.upper()) or f"http://{host}:{env['SHOP_PORT_' + name.upper()]}"
        for switch in SWITCHES
        for name in (switch.legacy, switch.new)
    }
    reload_urls = [u for u in env.get("SHOP_RELOAD_URLS", "").split(",") if u]
    store = ConfigStore(
        env.get("EDGEWAY_CONFIG_BUCKET", "shop_config"),
        nats_url=env["EDGEWAY_NATS_URL"],
        cache_dir=Path(env.get("EDGEWAY_CONFIG_CACHE_DIR", ".edgeway-cache")),
    )
    await store.start()
    flags = Flags(store)
    controller = StranglerController(
        path, urls, flags=flags, reload_urls=reload_urls, admin_token=env.get(TOKEN_ENV)
    )
    unsubscribe = store.subscribe(controller.notify)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("strangler controller watching %s", ", ".join(s.flag for s in SWITCHES))
    try:
        await controller.run(stop)
    finally:
        unsubscribe()
        flags.close()
        await store.stop()


def main() -> None:
    setup_logging("strangler", os.environ.get("EDGEWAY_LOG_LEVEL", "info"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_main())


if __name__ == "__main__":
    main()
