"""``edgeway demo``: the whole reference shop on this machine, with one command.

Starts the embedded NATS, the security service, every shop service (two catalog instances), the
legacy monolith, the web app and the edges of the chosen pattern as real processes on loopback;
waits until every one is ready (a progress display), prints the URLs and demo credentials, then
streams every process's log, merged, one colored name per process. A process that crashes is
restarted with backoff; Ctrl-C stops everything cleanly. ``edgeway demo flag NAME on|off``
switches a feature flag of the running shop.

``edgeway demo --system FILE`` does the same for any system file (``./edgeway.system.yaml`` when
there is one, such as a repository ``edgeway new`` made): its processes under the same supervisor,
and a banner of its processes and their URLs; the shop's credentials and commands are the shop's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgeway.demo.plan import CONFIG_BUCKET, DEFAULT_PORTS, PATTERNS, SYSTEM_FILE, ShopPlan, parse_ports
from edgeway.system import LoadedSystem, instance_names, process_ports

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from edgeway.demo.control.server import ControlRoom
    from edgeway.demo.supervisor import Supervisor

app = typer.Typer(no_args_is_help=False)

CREDENTIALS = (
    ("alice", "alice-pass", "customer"),
    ("bob", "bob-pass1", "customer"),
    ("sam", "sam-support", "support"),
    ("ada", "ada-admin1", "admin"),
)
PARTNER = ("partner-acme", "acme-partner-secret-01")


def busy_ports(ports: dict[str, int], host: str) -> list[tuple[str, int]]:
    """The ports some other process holds already."""
    busy = []
    for name, port in ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append((name, port))
    return busy


def _system_file(given: Path | None) -> LoadedSystem:
    """The system to run: the one given, else ./edgeway.system.yaml, else the reference shop's."""
    from edgeway.demo.plan import shop_system
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.system import load_system

    if given is None:
        here = Path("edgeway.system.yaml")
        given = here if here.is_file() else None
    if given is None or given.resolve() == SYSTEM_FILE.resolve():
        return shop_system()
    try:
        return load_system(given)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None


@app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    system: Path | None = typer.Option(
        None,
        "--system",
        "-s",
        help="The system file to run; default ./edgeway.system.yaml, else the reference shop's.",
    ),
    pattern: str | None = typer.Option(
        None,
        "--pattern",
        help="Which edges to start: all | direct | gateway | bff (services always run); default: the file's.",
    ),
    port: list[str] = typer.Option(
        [], "--port", help="NAME=PORT, repeatable, e.g. --port gateway=9080 --port nats=15222."
    ),
    data_dir: Path = typer.Option(Path(".edgeway-demo"), "--data-dir", help="Databases, maildir, NATS data."),
    fresh: bool = typer.Option(
        False, "--fresh", help="Delete the data directory first (start from the seed)."
    ),
    email_delay: float = typer.Option(
        0.3, "--email-delay", help="Seconds between two e-mails of a bulk job."
    ),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Show request log lines."),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", help="Seconds to wait for readiness."),
    tls: bool = typer.Option(
        False,
        "--tls",
        help="HTTPS on every edge and service, mTLS between the edges and the services "
        "(a local CA in <data-dir>/tls, made once).",
    ),
    control_room: bool = typer.Option(
        True, "--control-room/--no-control-room", help="Serve the control room (and collect the spans)."
    ),
) -> None:
    """Start the reference shop (every service, the security service, NATS and the edges), or the
    system of --system FILE."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from edgeway.demo.supervisor import Supervisor

    loaded = _system_file(system)
    wanted = pattern if pattern is not None else loaded.model.pattern
    chosen = next((p for p in PATTERNS if p == wanted), None)
    if chosen is None:
        raise typer.BadParameter(f"--pattern must be one of {', '.join(PATTERNS)}")
    try:
        # the system's ports, and the control room's (the demo process serves it)
        ports = parse_ports(port, {**process_ports(loaded.model), "control": DEFAULT_PORTS["control"]})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    plan = ShopPlan(
        data_dir.resolve(),
        ports,
        chosen,
        email_delay=email_delay,
        system_file=loaded,
        control_room=control_room,
        tls=tls,
    )
    probe_tls = _prepare_tls(plan) if tls else None
    plan.strangler_file.unlink(missing_ok=True)  # the controller writes the current one first
    # The account page's strangler starts afresh (paused, on the monolith) with each demo.
    plan.strangler_state_file.unlink(missing_ok=True)
    busy = busy_ports(plan.used_ports(), plan.host)
    if busy:
        listed = ", ".join(f"{name} ({p})" for name, p in busy)
        example = busy[0][0]
        raise typer.BadParameter(
            f"port(s) already in use: {listed}. Stop what holds them, or choose others, "
            f"e.g. --port {example}={busy[0][1] + 1000}"
        )
    console = Console(highlight=False)
    bucket = plan.system.broker.config_bucket
    supervisor = Supervisor(
        plan.processes(),
        console=console,
        hooks={"nats": lambda: _prepare_broker(plan, bucket)} if bucket else {},
        startup_timeout=startup_timeout,
        show_access=access_log,
        probe_tls=probe_tls,
    )
    room = None
    if control_room:
        from edgeway.demo.control.wiring import control_room as build_control_room

        room = build_control_room(plan, supervisor, CREDENTIALS[0][:2], PARTNER)
    code = asyncio.run(_run(supervisor, lambda: _print_ready(console, plan, supervisor), room))
    raise typer.Exit(code)


def _prepare_tls(plan: ShopPlan) -> ssl.SSLContext:
    """Make the demo's CA and certificates (the first time), write the edges' TLS overlay, and
    return how the readiness probes reach the services (the CA and the client certificate)."""
    from edgeway.demo.tls import demo_certificates
    from edgeway.pki.local_ca import LocalCAError

    try:
        certs = demo_certificates(plan.certificates.directory)
    except LocalCAError as exc:
        raise typer.BadParameter(
            f"--tls: {exc} (delete {plan.certificates.directory} to make a new CA)"
        ) from None
    certs.write_edge_overlay(plan.edge_services())
    return certs.client_context()


async def _run(supervisor: Supervisor, on_ready: Callable[[], None], room: ControlRoom | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if room is None:
        return await supervisor.run(stop, on_ready)

    def ready() -> None:
        room.watch()
        on_ready()

    # Up before the processes, so their first spans have somewhere to go; down after them, so
    # their last ones do too.
    try:
        await room.start()
    except OSError as exc:  # taken since the check: name the port and the way out
        supervisor.console.print(
            f"cannot serve the control room on port {room.settings.port}: {exc}; "
            "choose another with --port control=PORT, or --no-control-room",
            style="bold red",
        )
        return 1
    try:
        return await supervisor.run(stop, ready)
    finally:
        await room.stop()


async def _prepare_broker(plan: ShopPlan, bucket: str) -> None:
    from edgeway.demo.flags import ensure_config_bucket

    await ensure_config_bucket(plan.nats_url, bucket)


def cli_command(env: Mapping[str, str] | None = None) -> str:
    """How the person reading our output runs edgeway, for the commands we print.

    ``./dev`` puts ``.venv/bin`` on its own PATH only, so a printed ``edgeway ...`` would be
    "command not found" in the user's shell: it passes what was typed in ``EDGEWAY_CLI``. Otherwise
    ``edgeway`` when the shell finds one, else this interpreter with ``-m edgeway.cli``.
    """
    env = os.environ if env is None else env
    given = env.get("EDGEWAY_CLI", "").strip()
    if given:
        return given
    if shutil.which("edgeway", path=env.get("PATH")):
        return "edgeway"
    return f"{sys.executable} -m edgeway.cli"


def demo_command(plan: ShopPlan, cli: str, *args: str) -> str:
    """``<cli> demo <args>`` with the options that reach this demo when it is not on its defaults
    (no args: the command that starts it)."""
    words = [cli, "demo", *args]
    if args and args[0] == "flag":
        if plan.ports["nats"] != DEFAULT_PORTS["nats"]:
            words += ["--nats-port", str(plan.ports["nats"])]
    else:
        if plan.pattern != "all":
            words += ["--pattern", plan.pattern]
        if plan.tls and not args:
            words.append("--tls")
        words += [f"--port {n}={p}" for n, p in plan.ports.items() if p != DEFAULT_PORTS[n]]
    return " ".join(words)


def ready_banner(plan: ShopPlan, processes: int, elapsed: float, cli: str) -> list[Text]:
    """What is printed once everything is ready. Every URL and command is on a line of its own
    and never cut; with the default ports every line fits 80 columns."""
    from rich.text import Text

    if not plan.is_shop:
        return system_banner(plan, processes, elapsed)

    lines = [
        Text(f"edgeway demo: all {processes} processes are ready ({elapsed:.1f} s)", style="bold green"),
        Text(f"the shop, pattern: {plan.pattern}", style="bold"),
    ]

    def entry(what: str, url: str) -> None:
        lines.append(Text(f"  {what}"))
        lines.append(Text(f"      {url}", style="cyan"))

    edges = plan.edges()
    if plan.serves_control_room:
        entry("control room: topology, traces, flags, patterns", f"{plan.url('control')}/")
    if "web-bff" in edges:
        entry("web app through the web BFF", f"{plan.url('web-bff')}/")
    if not plan.tls:  # with --tls the services want a client certificate, which a browser has not
        entry("web app, Direct pattern", f"{plan.url('web')}/")
    if "mobile-bff" in edges:
        entry("mobile BFF", f"{plan.url('mobile-bff')}/m/home")
    if "gateway" in edges:
        entry("API gateway (partners)", f"{plan.url('gateway')}/v1/products")
    system = plan.system
    for service, spec in system.services.items():
        if spec.kind == "kit" and spec.health is None:  # the kit's services, with their OpenAPI page
            for name in instance_names(system, service):
                entry(f"{name} (direct, OpenAPI)", f"{plan.url(name)}/docs")
    entry("legacy monolith", plan.url("legacy"))
    entry("security service", f"{plan.security_url}/.well-known/openid-configuration")
    entry("NATS (embedded)", plan.nats_url)
    if plan.tls:
        lines.append(Text("HTTPS with the demo's own CA (trust it, or the browser warns):", style="bold"))
        lines.append(Text(f"  {plan.certificates.ca}", style="cyan"))
        lines.append(Text("  e.g. curl --cacert <that file> ...; the services want a client", style="dim"))
        lines.append(Text(f"  certificate: {plan.certificates.client_cert} (and .key)", style="dim"))
    lines.append(Text("users (password grant):", style="bold"))
    lines += [Text(f"  {u} / {p} ({r})") for u, p, r in CREDENTIALS]
    lines.append(Text("partner client (client credentials):", style="bold"))
    lines.append(Text(f"  {PARTNER[0]} / {PARTNER[1]}"))
    lines.append(Text("try:", style="bold"))

    def command(why: str, *args: str) -> None:
        lines.append(Text(f"  {demo_command(plan, cli, *args)}", style="cyan"))
        lines.append(Text(f"      {why}", style="dim"))

    command("payments decline: orders get compensated (or: the control room)", "flag", "payments.fail", "on")
    if "web-bff" in edges or "mobile-bff" in edges:
        command(
            "the account page leaves the monolith in steps: 10 → 50 → 100 %",
            "flag",
            "strangler.account-profile",
            "on",
        )
        lines.append(Text("      (rolled back by the edge if the new service fails)", style="dim"))
        edge = "web-bff" if "web-bff" in edges else "mobile-bff"
        # Two lines joined by the shell (a trailing backslash): the token alone fills most of 80
        # columns, and the command still runs as pasted.
        lines.append(Text(f"  curl --oauth2-bearer {plan.admin_token} \\", style="cyan"))
        lines.append(Text(f"      {plan.url(edge + '-admin')}/strangler", style="cyan"))
        lines.append(
            Text(
                "      watch it move: step, percent, status, why (pause/advance/rollback: POST)", style="dim"
            )
        )
    command("the patterns compared: calls, bytes, latency per screen", "compare")
    lines.append(Text("logs of every process follow; Ctrl-C stops everything", style="dim"))
    return lines


def system_banner(plan: ShopPlan, processes: int, elapsed: float) -> list[Text]:
    """The banner of a system other than the shop: its processes and where each is reached, from
    its file (each edge, each service instance, the broker)."""
    from rich.text import Text

    system = plan.system
    lines = [
        Text(f"edgeway demo: all {processes} processes are ready ({elapsed:.1f} s)", style="bold green"),
        Text(f"the system {system.system} ({plan.system_file.path}), pattern: {plan.pattern}", style="bold"),
    ]

    def entry(what: str, url: str) -> None:
        lines.append(Text(f"  {what}"))
        lines.append(Text(f"      {url}", style="cyan"))

    for name in plan.edges():
        edge = system.edges[name]
        entry(f"{name} ({'API gateway' if edge.pattern == 'gateway' else 'BFF'})", f"{plan.url(name)}/")
        entry(f"{name} admin (/healthz, /readyz, /routes, /metrics)", plan.url(f"{name}-admin"))
    for service, spec in system.services.items():
        for name in instance_names(system, service):
            if spec.kind == "security":
                entry(f"{name} (security service)", f"{plan.url(name)}/.well-known/openid-configuration")
            elif spec.kind == "kit" and spec.health is None:
                entry(f"{name} (direct, OpenAPI)", f"{plan.url(name)}/docs")
            else:
                entry(name, plan.url(name))
    entry("NATS (embedded)" if system.broker.nats.external_url is None else "NATS", plan.nats_url)
    lines.append(Text(f"data (databases, NATS): {plan.data_dir}", style="dim"))
    lines.append(Text("logs of every process follow; Ctrl-C stops everything", style="dim"))
    return lines


def _print_ready(console: Console, plan: ShopPlan, supervisor: Supervisor) -> None:
    elapsed = max(p.ready_at or 0.0 for p in supervisor.procs.values()) - supervisor.t0
    for line in ready_banner(plan, len(supervisor.procs), elapsed, cli_command()):
        # soft_wrap: a longer line (a command with several --port options) is wrapped by the
        # terminal, never cut or broken by rich, so it still copies and pastes as one command.
        console.print(line, soft_wrap=True)


@app.command("flag")
def flag(
    name: str = typer.Argument(..., help="Flag name, e.g. payments.fail or strangler.account-profile."),
    value: str = typer.Argument(..., help="on | off | a JSON rule such as '{\"percentage\": 25}'."),
    nats_port: int = typer.Option(DEFAULT_PORTS["nats"], "--nats-port", help="Port of the demo's NATS."),
) -> None:
    """Switch a feature flag of the running demo; every service picks it up live."""
    from edgeway.demo.flags import parse_flag_value, set_flag

    try:
        parsed = parse_flag_value(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    url = f"nats://127.0.0.1:{nats_port}"
    try:
        asyncio.run(set_flag(url, CONFIG_BUCKET, name, parsed))
    except Exception as exc:  # unreachable broker, no bucket: say what and where
        typer.secho(f"cannot set the flag at {url}: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    typer.echo(f"flag {name} = {parsed!r}")


@app.command("compare")
def compare(
    loads: int = typer.Option(100, "--loads", min=1, help="Times each screen is loaded per edge."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Screens loaded at once."),
    rtt_ms: float = typer.Option(0.0, "--rtt-ms", min=0, help="Client round-trip time added to every call."),
    pattern: str = typer.Option("all", "--pattern", help="The edges the running demo has."),
    port: list[str] = typer.Option([], "--port", help="NAME=PORT, as given to the running demo."),
) -> None:
    """Load the same screens through every edge of a running demo: calls, bytes and latency per screen."""
    from rich.console import Console

    from edgeway.demo.compare import login, measure, results_table, screens

    chosen = next((p for p in PATTERNS if p == pattern), None)
    if chosen is None:
        raise typer.BadParameter(f"--pattern must be one of {', '.join(PATTERNS)}")
    try:
        plan = ShopPlan(Path("."), parse_ports(port), chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    urls = {name: plan.url(name) for name in plan.ports}
    try:
        tokens = asyncio.run(login(plan.security_url, CREDENTIALS[0][0], CREDENTIALS[0][1], PARTNER))
    except Exception as exc:  # not running, or other ports: say where we looked
        typer.secho(f"cannot log in at {plan.security_url} (is the demo running?): {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    results = asyncio.run(
        measure(screens(urls, plan.edges()), tokens, loads=loads, concurrency=concurrency, rtt_ms=rtt_ms)
    )
    summaries = [r.summary() for r in results]
    Console().print(
        results_table(summaries, f"{loads} loads per screen, {concurrency} at once, rtt {rtt_ms:g} ms")
    )
    throttled = [s for s in summaries if s["throttled"]]
    if throttled:
        which = ", ".join(f"{s['edge']} {s['screen']}" for s in throttled)
        unlimited = demo_command(plan, "SHOP_PARTNER_RATE=100000 SHOP_PARTNER_BURST=100000 " + cli_command())
        typer.echo(
            f"{which}: rate-limited (429), each load waited its Retry-After and was answered; "
            "screens/s there is the limit, not the edge's speed. To measure without the limit, "
            f"start the demo as: {unlimited}"
        )
    if any(s["errors"] for s in summaries):
        for s in summaries:
            if s["first_error"]:
                typer.secho(f"{s['edge']} {s['screen']}: {s['first_error']}", err=True, fg="red")
        raise typer.Exit(1)
