"""The whole shop, started the way a user starts it (``edgeway demo``), for end-to-end tests.

:func:`running_shop` starts ``python -m edgeway.cli demo`` with every port free and a temporary
data directory (:func:`edgeway.demo.launch.launched_demo`), and stops it with SIGINT at the end,
checking that it exits cleanly. :class:`Shop` wraps what the tests do
against it: log in, call the services (directly or through an edge), switch flags, wait.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from edgeway.demo.flags import set_flag
from edgeway.demo.launch import LaunchedDemo, launched_demo
from edgeway.demo.plan import CONFIG_BUCKET
from edgeway.http.upstream_tls import client_context

T = TypeVar("T")

PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass1", "sam": "sam-support", "ada": "ada-admin1"}
PARTNER = ("partner-acme", "acme-partner-secret-01")


class Shop:
    def __init__(self, demo: LaunchedDemo) -> None:
        self.demo = demo
        self.ports = demo.ports
        self.data_dir = demo.data_dir
        # A --tls shop: trust its CA and present its client certificate (the services want one).
        self.http = httpx.Client(timeout=10.0, verify=self.tls_context() if demo.tls else True)
        self._tokens: dict[str, str] = {}

    def url(self, name: str) -> str:
        return self.demo.url(name)

    def tls_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """A --tls shop's client context: its CA, and (``client_cert``) its client certificate."""
        tls = self.data_dir / "tls"
        if not client_cert:
            return client_context(ca=str(tls / "ca.pem"))
        return client_context(
            ca=str(tls / "ca.pem"), cert=str(tls / "client.pem"), key=str(tls / "client.key")
        )

    def output(self) -> str:
        return self.demo.output()

    # -- identity --------------------------------------------------------------------------------

    def login(
        self, user: str, *, fresh: bool = False, base: str | None = None, path: str = "/oauth/token"
    ) -> str:
        """An access token for ``user`` (password grant, the web app's public client)."""
        if not fresh and user in self._tokens and base is None:
            return self._tokens[user]
        response = self.http.post(
            (base or self.url("security")) + path,
            data={
                "grant_type": "password",
                "username": user,
                "password": PASSWORDS[user],
                "client_id": "shop-web",
                "scope": "catalog orders notifications profile reviews",
            },
        )
        assert response.status_code == 200, response.text
        token = str(response.json()["access_token"])
        if base is None and not fresh:
            self._tokens[user] = token
        return token

    def partner_token(self, base: str | None = None) -> str:
        response = self.http.post(
            (base or self.url("security")) + "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=PARTNER,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def as_user(self, user: str) -> dict[str, str]:
        return self.bearer(self.login(user))

    # -- calls -----------------------------------------------------------------------------------

    def get(self, service: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(self.as_user(user) if user else {}), **kwargs.pop("headers", {})}
        return self.http.get(self.url(service) + path, headers=headers, **kwargs)

    def post(self, service: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(self.as_user(user) if user else {}), **kwargs.pop("headers", {})}
        return self.http.post(self.url(service) + path, headers=headers, **kwargs)

    def put(self, service: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(self.as_user(user) if user else {}), **kwargs.pop("headers", {})}
        return self.http.put(self.url(service) + path, headers=headers, **kwargs)

    def flag(self, name: str, value: Any) -> None:
        asyncio.run(set_flag(f"nats://127.0.0.1:{self.ports['nats']}", CONFIG_BUCKET, name, value))

    @contextmanager
    def flag_on(self, name: str, settle: float = 0.5) -> Iterator[None]:
        self.flag(name, True)
        time.sleep(settle)  # the services' KV watches deliver the change
        try:
            yield
        finally:
            self.flag(name, False)
            time.sleep(settle)

    def wait(self, check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
        """:func:`wait_for`, with the system's warnings and errors in the message when it times out."""
        try:
            return wait_for(check, timeout, what)
        except AssertionError as exc:
            noteworthy = [
                line
                for line in self.output().splitlines()
                if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback", "restarting"))
            ]
            raise AssertionError(
                f"{exc}\nwarnings and errors of the shop:\n" + "\n".join(noteworthy[-60:])
            ) from None

    def consumers(self, channel: str) -> str:
        """The broker's view of every consumer group on a channel (for failure messages)."""

        async def describe() -> str:
            import nats

            nc = await nats.connect(f"nats://127.0.0.1:{self.ports['nats']}")
            try:
                js = nc.jetstream()
                stream = f"SHOP_{channel}"
                lines = [f"stream {stream}: {(await js.stream_info(stream)).state}"]
                for info in await js.consumers_info(stream):
                    lines.append(
                        f"  {info.name}: pending={info.num_pending} ack_pending={info.num_ack_pending} "
                        f"redelivered={info.num_redelivered} waiting={info.num_waiting} "
                        f"delivered={info.delivered}"
                    )
                return "\n".join(lines)
            finally:
                await nc.close()

        return asyncio.run(describe())

    def pid_of(self, process: str) -> int:
        """The pid of the demo's child serving ``process`` (found by its EDGEWAY_PORT)."""
        want = f"EDGEWAY_PORT={self.ports[process]}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"edgeway.demo.shop" in cmdline and want in environ.split(b"\0"):
                return int(entry.name)
        raise LookupError(f"no process serves {process} on port {self.ports[process]}")


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


@contextmanager
def running_shop(
    tmp: Path, pattern: str = "all", extra: tuple[str, ...] = (), *, tls: bool = False
) -> Iterator[Shop]:
    with launched_demo(tmp, pattern=pattern, extra_args=["--email-delay", "0.05", *extra], tls=tls) as demo:
        shop = Shop(demo)
        try:
            yield shop
        finally:
            shop.http.close()
