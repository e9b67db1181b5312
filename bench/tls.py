"""``./dev bench tls``: HTTPS through the gateway against nginx, with the same certificate (ECDSA
P-256, from edgeway's local CA), the same protocols (TLS 1.2 and 1.3) and the same TLS 1.2
ciphers, one worker each, in front of the same backend, in one run:

    edgeway             wrk (keep-alive, https) -> edgeway, TLS listener -> backend  (log on)
    nginx               wrk (keep-alive, https) -> nginx, TLS listener   -> backend  (log off)
    edgeway_plain       wrk (keep-alive, http)  -> edgeway, plaintext    -> backend  (what TLS costs)
    nginx_plain         wrk (keep-alive, http)  -> nginx, plaintext      -> backend  (what TLS costs nginx)
    edgeway_handshakes  ``openssl s_time -new`` clients in parallel: full handshakes per second
    nginx_handshakes    the same against nginx

Keep-alive requests measure the record layer (encrypting and decrypting every request and
response); handshakes measure key exchange and signing. wrk resumes TLS sessions when it
reconnects, so new connections from wrk would measure resumptions: ``s_time -new`` makes every
connection a full handshake (it connects, completes the handshake and closes).

Target: edgeway >= 0.5x nginx's keep-alive req/s on one worker. On a shared machine
the handshake rate of a few sequential clients follows the machine's load more than the server;
the server's CPU per handshake (and ``handshakes_per_cpu_s``) is the steadier comparison.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import gateway, nginx
from bench.errors import BenchError, ToolMissing
from bench.harness import ManagedProcess, machine, median, reserved_port, tree_cpu_seconds
from bench.legs import Leg, Outcome, Settings, headline_connections, prepare_wrk_run, ratio, run_legs, say
from bench.proxy import backend_process, finish_workdir, nginx_skip_reason
from bench.report import Target, emit, show, targets_dict
from edgeway.gateway.tls.context import TLS12_CIPHERS
from edgeway.pki.local_ca import dev_certificates

DEFAULT_CONNECTIONS = (32,)
DEFAULT_CLIENTS = 4
WRK_LEGS = ("edgeway", "nginx", "edgeway_plain", "nginx_plain")
HANDSHAKE_LEGS = ("edgeway_handshakes", "nginx_handshakes")
LEG_NAMES = WRK_LEGS + HANDSHAKE_LEGS
_CONNECTIONS = re.compile(r"(\d+) connections in [\d.]+s;")


@dataclass
class Handshakes:
    """Full handshakes per second against one target, over its repetitions."""

    label: str
    status: str = "ok"
    reason: str | None = None
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the server's CPU per handshake

    @property
    def per_s(self) -> float | None:
        return round(median(self.rates), 1) if self.rates and self.status == "ok" else None

    @property
    def cpu_us_per_handshake(self) -> float | None:
        return round(median(self.cpu_us), 1) if self.cpu_us and self.status == "ok" else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "status": self.status,
            "reason": self.reason,
            "handshakes_per_s": self.per_s,
            "cpu_us_per_handshake": self.cpu_us_per_handshake,
            "samples": self.rates,
        }


def openssl_binary() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise ToolMissing("openssl", "apt-get install openssl (the handshake legs need openssl s_time)")
    return path


def s_time(port: int, seconds: float) -> int:
    """Full handshakes one ``openssl s_time -new`` client completed in ``seconds``."""
    argv = [
        openssl_binary(),
        "s_time",
        "-connect",
        f"127.0.0.1:{port}",
        "-new",
        "-time",
        str(max(1, round(seconds))),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    found = _CONNECTIONS.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise BenchError(
            f"openssl s_time failed (exit {done.returncode}): {(done.stdout + done.stderr)[-500:]}"
        )
    return int(found.group(1))


def handshake_rate(process: ManagedProcess, seconds: float, clients: int) -> tuple[float, float]:
    """Handshakes per second with ``clients`` s_time clients in parallel, and the server's CPU
    microseconds per handshake."""
    cpu_before = tree_cpu_seconds(process.pid)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        counts = list(pool.map(lambda _: s_time(process.port, seconds), range(clients)))
    elapsed = time.monotonic() - started
    spent = tree_cpu_seconds(process.pid) - cpu_before
    total = sum(counts)
    if total == 0:
        raise BenchError("no handshake completed")
    return total / elapsed, spent / total * 1e6


def run_handshakes(
    label: str,
    start: Callable[[Path], ManagedProcess],
    skip: str | None,
    settings: Settings,
    workdir: Path,
    clients: int,
) -> Handshakes:
    found = Handshakes(label)
    if skip:
        found.status, found.reason = "skipped", skip
        say(f"[yellow]skip[/yellow] {label}: {skip}")
        return found
    for rep in range(settings.repetitions):
        directory = workdir / f"{label.replace(' ', '_')}-{rep}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            process = start(directory)
        except BenchError as exc:
            found.status, found.reason = "failed", str(exc)
            return found
        try:
            if settings.warmup_s > 0:
                handshake_rate(process, settings.warmup_s, clients)
            say(f"{label}: {clients} x openssl s_time -new -time {settings.duration_s:g}")
            rate, cpu = handshake_rate(process, settings.duration_s, clients)
            found.rates.append(round(rate, 1))
            found.cpu_us.append(round(cpu, 1))
            say(f"  {rate:,.0f} handshakes/s, {cpu:.0f} µs CPU/handshake")
        except BenchError as exc:
            found.status, found.reason = "failed", str(exc)
            say(f"[red]failed[/red] {label}: {exc}")
            return found
        finally:
            if not process.alive():
                found.status, found.reason = "failed", f"died: {process.log_tail()}"
            process.stop()
    return found


def run(
    json: bool = False,
    duration: float = 10.0,
    connections: Sequence[int] = DEFAULT_CONNECTIONS,
    *,
    repetitions: int = 1,
    warmup: float = 2.0,
    only: Sequence[str] | None = None,
    clients: int = DEFAULT_CLIENTS,
) -> dict[str, Any]:
    """Run the TLS benchmark, print it, and return the result (the ``--json`` object)."""
    names = list(only or LEG_NAMES)
    unknown = sorted(set(names) - set(LEG_NAMES))
    if unknown:
        raise BenchError(f"unknown leg(s) {', '.join(unknown)}: choose from {', '.join(LEG_NAMES)}")
    settings, workdir = prepare_wrk_run("tls", connections, duration, repetitions, warmup)
    certs = dev_certificates(workdir / "pki", ("127.0.0.1", "localhost"))
    tls = {"certificates": [{"cert": str(certs.server_cert), "key": str(certs.server_key)}]}
    nginx_tls = nginx.NginxTls(certs.server_cert, certs.server_key, TLS12_CIPHERS)
    nginx_skip = nginx_skip_reason()
    openssl_skip = None
    try:
        openssl_binary()
    except ToolMissing as exc:
        openssl_skip = str(exc)
    with backend_process(workdir, port=0) as backend:
        say(f"backend on {backend.url}")

        def start_edgeway(with_tls: bool) -> Callable[[Path], ManagedProcess]:
            def start(d: Path) -> ManagedProcess:
                config = gateway.proxy_config(port=reserved_port(), backend_url=backend.url, access_log=True)
                if with_tls:
                    config["listen"]["tls"] = tls
                return gateway.process(d, config).start()

            return start

        def start_nginx(with_tls: bool) -> Callable[[Path], ManagedProcess]:
            def start(d: Path) -> ManagedProcess:
                return nginx.process(
                    d,
                    port=reserved_port(),
                    backend_port=backend.port,
                    access_log=False,
                    tls=nginx_tls if with_tls else None,
                ).start()

            return start

        every = [
            Leg(
                "edgeway",
                "edgeway https (log on)",
                start=start_edgeway(True),
                skip=gateway.unavailable_reason(),
            ),
            Leg("nginx", "nginx https (log off)", start=start_nginx(True), skip=nginx_skip),
            Leg(
                "edgeway_plain",
                "edgeway http (log on)",
                start=start_edgeway(False),
                skip=gateway.unavailable_reason(),
            ),
            Leg("nginx_plain", "nginx http (log off)", start=start_nginx(False), skip=nginx_skip),
        ]
        outcomes = run_legs([leg for leg in every if leg.name in names], settings, workdir)
        handshakes: dict[str, Handshakes] = {}
        if "edgeway_handshakes" in names:
            skip = gateway.unavailable_reason() or openssl_skip
            handshakes["edgeway_handshakes"] = run_handshakes(
                "edgeway handshakes", start_edgeway(True), skip, settings, workdir, clients
            )
        if "nginx_handshakes" in names:
            handshakes["nginx_handshakes"] = run_handshakes(
                "nginx handshakes", start_nginx(True), nginx_skip or openssl_skip, settings, workdir, clients
            )
    result = summarize(outcomes, handshakes, settings, clients)
    finish_workdir(workdir, failed=result["failed"])
    targets: list[Target] = result.pop("_targets")
    summary = [
        ("edgeway https / nginx https, keep-alive", show(result["ratio_nginx"])),
        ("CPU per request: nginx / edgeway", show(result["cpu_ratio_nginx"])),
        ("edgeway https / edgeway http", show(result["ratio_plain"])),
        ("edgeway http / nginx http (the same run, no TLS)", show(result["ratio_nginx_plain"])),
        ("edgeway full handshakes per second", show(result["handshakes_per_s"])),
        ("nginx full handshakes per second", show(result["nginx_handshakes_per_s"])),
        ("edgeway / nginx handshakes", show(result["handshake_ratio_nginx"])),
        ("CPU per handshake: nginx / edgeway", show(result["handshake_cpu_ratio_nginx"])),
    ]
    emit(
        result,
        as_json=json,
        title="edgeway bench tls",
        outcomes=outcomes,
        settings=settings,
        summary=summary,
        targets=targets,
    )
    return result


def summarize(
    outcomes: dict[str, Outcome], handshakes: dict[str, Handshakes], settings: Settings, clients: int
) -> dict[str, Any]:
    c = headline_connections(settings.connections)

    def rps(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.rps(c)

    def cpu(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.cpu_us_per_request(c)

    def per_s(name: str) -> float | None:
        h = handshakes.get(name)
        return None if h is None else h.per_s

    edgeway_hs, nginx_hs = per_s("edgeway_handshakes"), per_s("nginx_handshakes")
    edgeway_hs_cpu = _cpu_per_handshake(handshakes, "edgeway_handshakes")
    nginx_hs_cpu = _cpu_per_handshake(handshakes, "nginx_handshakes")
    targets = [
        Target(f"edgeway https / nginx https at {c} conns", ratio(rps("edgeway"), rps("nginx")), ">=", 0.5)
    ]
    failed = [n for n, o in outcomes.items() if o.status.value == "failed"]
    failed += [n for n, h in handshakes.items() if h.status == "failed"]
    return {
        "edgeway_rps": rps("edgeway"),
        "nginx_rps": rps("nginx"),
        "ratio_nginx": ratio(rps("edgeway"), rps("nginx")),
        "handshakes_per_s": edgeway_hs,
        "nginx_handshakes_per_s": nginx_hs,
        "handshake_ratio_nginx": ratio(edgeway_hs, nginx_hs),
        "edgeway_plain_rps": rps("edgeway_plain"),
        "nginx_plain_rps": rps("nginx_plain"),
        "ratio_plain": ratio(rps("edgeway"), rps("edgeway_plain")),
        "ratio_nginx_plain": ratio(rps("edgeway_plain"), rps("nginx_plain")),
        "edgeway_cpu_us": cpu("edgeway"),
        "nginx_cpu_us": cpu("nginx"),
        "cpu_ratio_nginx": ratio(cpu("nginx"), cpu("edgeway")),
        "edgeway_cpu_us_per_handshake": edgeway_hs_cpu,
        "nginx_cpu_us_per_handshake": nginx_hs_cpu,
        # Handshakes one core could do at that CPU cost: the figure a shared machine does not
        # move much, where the wall-clock rate of a few sequential clients swings with the load.
        "handshakes_per_cpu_s": _per_cpu_s(edgeway_hs_cpu),
        "nginx_handshakes_per_cpu_s": _per_cpu_s(nginx_hs_cpu),
        "handshake_cpu_ratio_nginx": ratio(nginx_hs_cpu, edgeway_hs_cpu),
        "connections": c,
        "failed": bool(failed),
        "details": {
            "machine": machine(),
            "settings": {**settings.as_dict(), "handshake_clients": clients, "tls": "ECDSA P-256, TLS 1.3"},
            "legs": {name: o.as_dict() for name, o in outcomes.items()},
            "handshakes": {name: h.as_dict() for name, h in handshakes.items()},
            "failed_legs": failed,
            "targets": targets_dict(targets),
        },
        "_targets": targets,
    }


def _per_cpu_s(cpu_us: float | None) -> float | None:
    return None if not cpu_us else round(1e6 / cpu_us, 1)


def _cpu_per_handshake(handshakes: dict[str, Handshakes], name: str) -> float | None:
    h = handshakes.get(name)
    return None if h is None else h.cpu_us_per_handshake


__all__ = ["LEG_NAMES", "run"]
