"""The demo's strangler switch: a feature flag that starts or stops the gateway's progressive
strangler on the account page — the move itself is the gateways' (``proxy.strangler``).

Both BFF edges route ``/account/profile`` with one strangler rule, id ``account-profile``, from
the legacy monolith to the profile service in steps (10 % → 50 % → 100 %, judged every second,
rolled back by the gateway itself when the profile service does worse). The rule starts paused,
at 0 %. This controller follows the flag ``strangler.account-profile`` in the config bucket
(NATS KV, switched with ``edgeway demo flag strangler.account-profile on``, or the control room)
and turns it into the admin API's commands: on → ``POST /strangler/account-profile/resume``,
off → ``POST /strangler/account-profile/rollback``. One edge taking the command is enough: the
edges share the rule's state through the file store this controller names in the file they
include::

    # strangler.yaml (included by every edge config)
    strangler_store: {backend: file, path: <data dir>/strangler-state.json}

Watch it move on any edge's admin API: ``GET /strangler`` (with the demo's admin token), or the
``edgeway_strangler_percent`` metric.
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
    route: str  # the strangler rule's route id on the edges


SWITCHES = (Switch("strangler.account-profile", "account-profile"),)


def render(state_path: Path) -> str:
    """The included file: where the edges keep their strangler rules' state (shared)."""
    return (
        "# Written by the demo's strangler controller (edgeway.demo.strangler): the edges share\n"
        "# their strangler rules' steps through this file store, so they move together.\n"
        f"strangler_store: {{backend: file, path: {str(state_path)!r}}}\n"
    )


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
        state_path: Path,
        *,
        flags: Flags,
        admin_urls: list[str],
        admin_token: str | None = None,
    ) -> None:
        self.path = path
        self.state_path = state_path
        self.flags = flags
        self.admin_urls = admin_urls  # each edge's admin API base URL
        # The gateways' admin token (the demo gives every edge the same one): commands are writes.
        self.headers = {"content-type": "application/json"}
        if admin_token:
            self.headers["authorization"] = f"Bearer {admin_token}"
        self._changed = asyncio.Event()
        self._sent: dict[str, bool] = {}  # the flag value last turned into a command, by route
        # One apply at a time: a second caller while a command is on the wire would send it again.
        self._applying = asyncio.Lock()

    def notify(self, key: str, _value: object) -> None:
        if key.startswith("flags.strangler."):
            self._changed.set()

    async def apply(self) -> list[str]:
        """Send each rule the command its flag asks for, when the flag changed; what was sent."""
        sent: list[str] = []
        async with self._applying:
            for switch in SWITCHES:
                on = self.flags.enabled(switch.flag)
                if self._sent.get(switch.route, False) == on:
                    continue
                command = "resume" if on else "rollback"
                if await self._command(switch.route, command):
                    self._sent[switch.route] = on
                    sent.append(f"{switch.route}/{command}")
        return sent

    async def _command(self, route: str, command: str) -> bool:
        # One edge is enough (they share the rule's state); the next is tried if one is down.
        without = 0  # edges that answered they have no such rule (the partner gateway)
        async with httpx.AsyncClient(timeout=10.0) as http:
            for base in self.admin_urls:
                try:
                    response = await http.post(f"{base}/strangler/{route}/{command}", headers=self.headers)
                except httpx.HTTPError as exc:
                    log.warning("strangler: %s did not take %s: %s", base, command, exc)
                    continue
                if response.status_code == 404:
                    without += 1
                    continue
                if response.status_code == 200:
                    state = response.json()
                    log.info(
                        "strangler: %s %s: %s at %g%% (%s)",
                        route,
                        command,
                        state.get("status"),
                        state.get("percent", 0.0),
                        state.get("reason"),
                    )
                    return True
                log.warning("strangler: %s refused %s: %s", base, command, response.text[:500])
        if self.admin_urls and without == len(self.admin_urls):
            log.info("strangler: no edge routes %s with a strangler rule; nothing to %s", route, command)
            return True
        return False

    async def run(self, stop: asyncio.Event) -> None:
        # The file is written before the gateways start (they include it); the rule starts paused.
        write_if_changed(self.path, render(self.state_path))
        if any(self.flags.enabled(s.flag) for s in SWITCHES):
            self._changed.set()  # a flag already on: resume once the edges answer
        while not stop.is_set():
            waiter = asyncio.create_task(self._changed.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._changed.is_set():
                self._changed.clear()
                await self.apply()
                if any(self._sent.get(s.route, False) != self.flags.enabled(s.flag) for s in SWITCHES):
                    await asyncio.sleep(1.0)  # no edge took the command (not up yet): try again
                    self._changed.set()


async def _main() -> None:
    env = os.environ
    path = Path(env["SHOP_STRANGLER_FILE"])
    state_path = Path(env.get("SHOP_STRANGLER_STATE") or path.with_name("strangler-state.json"))
    admin_urls = [u for u in env.get("SHOP_ADMIN_URLS", "").split(",") if u]
    store = ConfigStore(
        env.get("EDGEWAY_CONFIG_BUCKET", "shop_config"),
        nats_url=env["EDGEWAY_NATS_URL"],
        cache_dir=Path(env.get("EDGEWAY_CONFIG_CACHE_DIR", ".edgeway-cache")),
    )
    await store.start()
    flags = Flags(store)
    controller = StranglerController(
        path, state_path, flags=flags, admin_urls=admin_urls, admin_token=env.get(TOKEN_ENV)
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
