"""``./dev bench revocation``: how soon a revoked token is refused at every gateway.

    client --POST /oauth/revoke--> security service --outbox relay--> NATS --> gateway x2
                                   (GET /revocations, polled by each gateway)

Real processes: an embedded nats-server on a free port, the security service (``edgeway security
serve``, SQLite, its ``bus_url`` on that NATS), two gateways (``edgeway gateway``) in front of the
bench backend. For each of ``--tokens`` tokens: log in, wait until both gateways accept it, pause
a random part of the poll interval (so revokes are not in step with the gateways' poll timers),
send the revoke, then ask both gateways (one keep-alive connection each, requests back to back) until
each answers 401. A sample is the time from sending the revoke to a gateway's first 401, so it
includes the revoke request itself (the service commits, then its relay publishes).

Legs:
    push   ``revocations.bus`` set, the feed polled hourly: only the push explains a refusal
    poll   no bus, the feed polled every ``--poll-interval``: the baseline (expect ~interval / 2)

Password hashing is set cheap (argon2 t=1, 8 KiB): logins are setup here, not what is measured.

    python -m bench.revocation [--tokens 20] [--poll-interval 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json as jsonlib
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import gateway
from bench.errors import BenchError
from bench.harness import ManagedProcess, machine, python_module, reserved_port, stopping
from bench.legs import say
from bench.proxy import backend_process
from edgeway.bus.embedded import EmbeddedNats

ISSUER = "https://bench.edgeway"
AUDIENCE = "bench"
PREFIX = "bench"
USERS = 8  # tokens are issued to these in turn
SEED = {
    "scopes": ["api"],
    "roles": {"customer": ["api:read"]},
    "users": [
        {"username": f"user{n}", "password": f"user{n}-password", "roles": ["customer"]} for n in range(USERS)
    ],
    "clients": [{"client_id": "web", "public": True, "grant_types": ["password"], "scopes": ["api"]}],
}


def security_process(directory: Path, *, port: int, nats_url: str) -> ManagedProcess:
    (directory / "seed.yaml").write_text(yaml.safe_dump(SEED))
    settings = {
        "issuer": ISSUER,
        "audience": [AUDIENCE],
        "db_url": f"sqlite+aiosqlite:///{directory / 'security.db'}",
        "keys_path": str(directory / "keys.json"),
        "seed_file": str(directory / "seed.yaml"),
        "bus_url": nats_url,
        "bus_prefix": PREFIX,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 8,
        "argon2_parallelism": 1,
        "throttle_base_delay": 0.0,
    }
    config = directory / "security.yaml"
    config.write_text(yaml.safe_dump(settings))
    argv = python_module("edgeway.cli", "security", "serve", "--config", str(config), "--port", str(port))
    # It logs JSON lines on stdout (its start line included), not text on stderr.
    stdout = directory / "security.stdout.log"
    return ManagedProcess("security", argv, port=port, log_dir=directory, stdout_path=stdout)


def gateway_config(
    *, port: int, admin: int, backend_url: str, security: str, bus: str | None, poll: float
) -> dict[str, Any]:
    revocations: dict[str, Any] = {"url": f"{security}/revocations", "interval": poll}
    if bus is not None:
        revocations["bus"] = {"url": bus, "prefix": PREFIX, "fallback_interval": poll}
    config = gateway.proxy_config(port=port, backend_url=backend_url, access_log=False)
    config["admin"] = {"host": "127.0.0.1", "port": admin}
    config["auth"] = {
        "jwks_url": f"{security}/.well-known/jwks.json",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "revocations": revocations,
    }
    config["routes"] = [{**route, "auth": {}} for route in config["routes"]]
    return config


async def _status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/api/x", headers={"authorization": f"Bearer {token}"})).status_code


async def _refused_after(client: httpx.AsyncClient, token: str, started: float, limit: float) -> float:
    while await _status(client, token) != 401:
        if time.perf_counter() - started > limit:
            raise BenchError(f"a revoked token was still accepted after {limit:g} s")
    return time.perf_counter() - started


async def _measure(
    security: str, gateways: list[str], tokens: int, pause: float, limit: float
) -> list[float]:
    async with httpx.AsyncClient(base_url=security) as service:
        clients = [httpx.AsyncClient(base_url=url) for url in gateways]
        try:
            samples: list[float] = []
            for n in range(tokens):
                user = f"user{n % USERS}"
                form = {
                    "grant_type": "password",
                    "username": user,
                    "password": f"{user}-password",
                    "client_id": "web",
                }
                login = await service.post("/oauth/token", data=form)
                if login.status_code != 200:
                    raise BenchError(f"login failed: {login.status_code} {login.text[:200]}")
                token = login.json()["access_token"]
                for client in clients:
                    if await _status(client, token) != 200:
                        raise BenchError("a fresh token was refused before its revocation")
                await asyncio.sleep(random.uniform(0.0, pause))
                started = time.perf_counter()
                revoked = await service.post("/oauth/revoke", data={"token": token})
                if revoked.status_code != 200:
                    raise BenchError(f"revoke failed: {revoked.status_code}")
                samples += await asyncio.gather(*(_refused_after(c, token, started, limit) for c in clients))
            return samples
        finally:
            for client in clients:
                await client.aclose()


async def _push_up(admins: list[str], within: float = 20.0) -> None:
    """Wait until every gateway reports its revocation push up (the service's relay may still be
    connecting; the gateways subscribe at start)."""
    from edgeway.gateway.process.admin_auth import find_token

    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        for admin in admins:
            # The readiness detail needs the admin token the gateway wrote for its port.
            token = find_token(int(admin.rsplit(":", 1)[1]))
            headers = {"authorization": f"Bearer {token}"} if token else {}
            while True:
                body = (await http.get(f"{admin}/readyz", headers=headers)).json()
                if body["auth"]["revocations"]["push"]["state"] == "up":
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"the revocation push of {admin} is not up: {body}")
                await asyncio.sleep(0.1)


def _leg(name: str, directory: Path, nats_url: str, tokens: int, poll: float) -> dict[str, Any]:
    workdir = directory / name
    workdir.mkdir()
    # Port 0 for both, started first: the gateways' configs name the ports they took.
    backend = backend_process(workdir, port=0)
    service = security_process(workdir, port=0, nats_url=nats_url)
    bus = nats_url if name == "push" else None
    poll_interval = 3600.0 if name == "push" else poll
    gateways: list[ManagedProcess] = []
    urls, admins = [], []
    with stopping(backend, service):
        backend.start()
        service.start()
        security = service.url
        for n in range(2):
            port, admin = reserved_port(), reserved_port()
            config = gateway_config(
                port=port,
                admin=admin,
                backend_url=backend.url,
                security=security,
                bus=bus,
                poll=poll_interval,
            )
            gateways.append(gateway.process(workdir / f"gateway{n}", config, name=f"gateway{n}"))
            urls.append(f"http://127.0.0.1:{port}")
            admins.append(f"http://127.0.0.1:{admin}")
        with stopping(*gateways):
            for process in gateways:
                process.start()
            if bus is not None:
                asyncio.run(_push_up(admins))
            say(f"{name}: {tokens} tokens revoked, two gateways")
            samples = asyncio.run(_measure(security, urls, tokens, pause=poll, limit=max(10.0, 3 * poll)))
    ms = sorted(s * 1000 for s in samples)
    return {
        "samples": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[max(0, round(0.95 * len(ms)) - 1)], 1),
        "max_ms": round(ms[-1], 1),
        "poll_interval_s": poll_interval,
    }


def run(json: bool = False, tokens: int = 20, poll_interval: float = 2.0) -> dict[str, Any]:
    skip = gateway.unavailable_reason()
    if skip is not None:
        raise BenchError(skip)
    with tempfile.TemporaryDirectory(prefix="edgeway-revocation-bench-") as tmp:
        directory = Path(tmp)
        with EmbeddedNats(port=0, data_dir=directory / "nats") as broker:
            result: dict[str, Any] = {
                "tokens": tokens,
                "push": _leg("push", directory, broker.url, tokens, poll_interval),
                "poll": _leg("poll", directory, broker.url, tokens, poll_interval),
            }
    result["machine"] = machine()
    if json:
        print(jsonlib.dumps(result))
    else:
        for leg in ("push", "poll"):
            r = result[leg]
            say(
                f"{leg}: revoke -> 401 at a gateway: median {r['median_ms']} ms, p95 {r['p95_ms']} ms, "
                f"max {r['max_ms']} ms ({r['samples']} samples, feed polled every {r['poll_interval_s']:g} s)"
            )
        say(f"load average {result['machine']['loadavg_1m']}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    run(options.json, options.tokens, options.poll_interval)
