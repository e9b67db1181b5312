"""The whole shop, started the way a user starts it (``edgeway demo``), for end-to-end tests.

:func:`running_shop` starts ``python -m edgeway.cli demo`` with every port free and a temporary
data directory, waits for its "all ... processes are ready" line, and stops it with SIGINT (as
Ctrl-C does) at the end, checking that it exits cleanly. :class:`Shop` wraps what the tests do
against it: log in, call the services (directly or through an edge), switch flags, wait.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from edgeway.demo.flags import set_flag
from edgeway.demo.plan import CONFIG_BUCKET, DEFAULT_PORTS

T = TypeVar("T")

PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass1", "sam": "sam-support", "ada": "ada-admin1"}
PARTNER = ("partner-acme", "acme-partner-secret-01")
READY_LINE = "processes are ready"


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Shop:
    def __init__(
        self, ports: dict[str, int], data_dir: Path, log: Path, process: subprocess.Popen[bytes]
    ) -> None:
        self.ports = ports
        self.data_dir = data_dir
        self.log = log
        self.process = process
        self.http = httpx.Client(timeout=10.0)
        self._tokens: dict[str, str] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

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
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


@contextmanager
def running_shop(tmp: Path, pattern: str = "all", extra: tuple[str, ...] = ()) -> Iterator[Shop]:
    names = list(DEFAULT_PORTS)
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    data_dir = tmp / "data"
    log = tmp / "demo.log"
    argv = [sys.executable, "-m", "edgeway.cli", "demo", "--pattern", pattern, "--data-dir", str(data_dir)]
    argv += ["--email-delay", "0.05", *extra]
    for name, port in ports.items():
        argv += ["--port", f"{name}={port}"]
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    shop = Shop(ports, data_dir, log, process)
    try:
        deadline = time.monotonic() + 100
        while READY_LINE not in shop.output():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"edgeway demo did not get ready:\n{shop.output()[-6000:]}")
            time.sleep(0.2)
        yield shop
    finally:
        shop.http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(
                    f"edgeway demo did not stop on SIGINT:\n{shop.output()[-3000:]}"
                ) from None
