"""``./dev bench auth``: the cost of JWT authentication at the edge.

The proxy benchmark twice in one run, one gateway worker each, in front of the same backend:

    plain   wrk -> edgeway (route without auth)      -> backend
    auth    wrk -> edgeway (route with auth: {})     -> backend

Both legs send the same ``Authorization: Bearer`` header with the same EdDSA token on every
request, so the only difference is the gateway's work: reading the token, a verified-token cache
hit (the signature is checked once; afterwards expiry, revocation and the key are checked),
stripping spoofable headers and adding the identity headers. The JWKS is served by a plain HTTP
server from the key ring the token was signed with. Target: ``auth_rps / plain_rps >= 0.85``;
``cpu_ratio`` (plain's CPU per request over auth's) says the same from the gateway's own CPU
time, which a busy machine disturbs less.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import gateway
from bench.harness import ManagedProcess, machine, reserved_port
from bench.legs import Leg, Outcome, Settings, headline_connections, prepare_wrk_run, ratio, run_legs, say
from bench.proxy import backend_process, finish_workdir
from bench.report import Target, emit, show, targets_dict
from edgeway.security.keys import KeyRing
from edgeway.security.tokens import TokenIssuer

DEFAULT_CONNECTIONS = (32,)
ISSUER = "https://bench.edgeway"
AUDIENCE = "bench"
TARGET_RATIO = 0.85


def jwks_process(directory: Path, ring: KeyRing) -> ManagedProcess:
    """A static HTTP server publishing the ring's JWKS at ``/.well-known/jwks.json``."""
    root = directory / "jwks"
    (root / ".well-known").mkdir(parents=True, exist_ok=True)
    (root / ".well-known" / "jwks.json").write_text(jsonlib.dumps(ring.jwks()))
    # http.server on port 0, naming the port it took on stderr (what ManagedProcess(port=0) reads).
    code = (
        "import functools, http.server, sys\n"
        f"handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(root)!r})\n"
        "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n"
        "print(f'listening on 127.0.0.1:{server.server_address[1]}', file=sys.stderr, flush=True)\n"
        "server.serve_forever()\n"
    )
    return ManagedProcess("jwks", [sys.executable, "-c", code], port=0, log_dir=directory)


def auth_config(*, port: int, backend_url: str, jwks_url: str) -> dict[str, Any]:
    """The proxy benchmark's gateway with its one route protected."""
    config = gateway.proxy_config(port=port, backend_url=backend_url, access_log=True)
    config["auth"] = {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE}
    config["routes"] = [{**route, "auth": {}} for route in config["routes"]]
    return config


def legs(backend_url: str, jwks_url: str, token: str) -> list[Leg]:
    skip = gateway.unavailable_reason()
    header = (("Authorization", f"Bearer {token}"),)

    def start_plain(d: Path) -> ManagedProcess:
        config = gateway.proxy_config(port=reserved_port(), backend_url=backend_url, access_log=True)
        return gateway.process(d, config, name="plain").start()

    def start_auth(d: Path) -> ManagedProcess:
        config = auth_config(port=reserved_port(), backend_url=backend_url, jwks_url=jwks_url)
        return gateway.process(d, config, name="auth").start()

    return [
        Leg("plain", "edgeway, route without auth", start=start_plain, skip=skip, headers=header),
        Leg("auth", "edgeway, JWT-protected route", start=start_auth, skip=skip, headers=header),
    ]


def summarize(outcomes: dict[str, Outcome], settings: Settings) -> dict[str, Any]:
    c = headline_connections(settings.connections)

    def rps(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.rps(c)

    def cpu(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.cpu_us_per_request(c)

    auth_rps, plain_rps = rps("auth"), rps("plain")
    value = ratio(auth_rps, plain_rps)
    # The gateway's own CPU per request: steadier than req/s on a shared machine, where the
    # other processes' load moves between legs. plain/auth is the throughput ratio a CPU-bound
    # gateway would reach.
    cpu_ratio = ratio(cpu("plain"), cpu("auth"))
    targets = [
        Target(f"auth/plain req/s at {c} conns", value, ">=", TARGET_RATIO),
        Target("plain/auth CPU per request", cpu_ratio, ">=", TARGET_RATIO),
    ]
    failed = [name for name, o in outcomes.items() if o.status.value == "failed"]
    return {
        "auth_rps": auth_rps,
        "plain_rps": plain_rps,
        "ratio": value,
        "auth_cpu_us": cpu("auth"),
        "plain_cpu_us": cpu("plain"),
        "cpu_ratio": cpu_ratio,
        "connections": c,
        "failed": bool(failed),
        "details": {
            "machine": machine(),
            "settings": settings.as_dict(),
            "legs": {name: o.as_dict() for name, o in outcomes.items()},
            "failed_legs": failed,
            "targets": targets_dict(targets),
        },
        "_targets": targets,
    }


def run(
    json: bool = False,
    duration: float = 10.0,
    connections: Sequence[int] = DEFAULT_CONNECTIONS,
    *,
    repetitions: int = 3,
    warmup: float = 2.0,
) -> dict[str, Any]:
    """Run the auth benchmark, print it, and return the result (the ``--json`` object)."""
    settings, workdir = prepare_wrk_run("auth", connections, duration, repetitions, warmup)
    ring = KeyRing.generate("EdDSA")
    # Long-lived: one token for the whole run, as a client reusing its access token would.
    token = TokenIssuer(ring, ISSUER, AUDIENCE, ttl=24 * 3600).issue("bench-user", roles=["customer"]).token
    with (
        backend_process(workdir, port=0) as backend,
        jwks_process(workdir, ring) as jwks,
    ):
        say(f"backend on {backend.url}, JWKS on {jwks.url}")
        outcomes = run_legs(legs(backend.url, f"{jwks.url}/.well-known/jwks.json", token), settings, workdir)
    result = summarize(outcomes, settings)
    finish_workdir(workdir, failed=result["failed"])
    targets: list[Target] = result.pop("_targets")
    emit(
        result,
        as_json=json,
        title="edgeway bench auth",
        outcomes=outcomes,
        settings=settings,
        summary=[
            ("auth / plain req/s", show(result["ratio"])),
            ("CPU per request: plain / auth", show(result["cpu_ratio"])),
        ],
        targets=targets,
    )
    return result
