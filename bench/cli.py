"""``./dev bench …`` (``python -m bench …`` in a checkout): edgeway side by side with nginx and aiohttp.

The benchmarks are a developer command, not part of the installed package: they need a source
checkout (this harness, next to ``src/``), the dev extra (aiohttp baselines, the services the
bus and shop benchmarks start) and system tools (wrk, nginx). ``./dev bench`` runs them on the
compiled build, which is what a wheel install runs.

Each benchmark is a module ``bench.<name>`` with ``run(json=..., ...) -> dict``; the commands
below only parse options and map a :class:`~bench.errors.BenchError` to exit code 2.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bench.errors import BenchError

app = typer.Typer(no_args_is_help=True, help="Benchmarks: edgeway side by side with nginx and aiohttp.")


def _fail(message: str) -> NoReturn:
    typer.secho(f"bench: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _finish(result: Any) -> None:
    """Exit non-zero when a leg that should have run failed, so CI notices."""
    if isinstance(result, dict) and result.get("failed"):
        raise typer.Exit(1)


def _parse_connections(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 32,256, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"connection counts must be positive integers, got {text!r}")
    return values


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
LoadSeconds = Annotated[
    float, typer.Option("--duration", help="Seconds of load per leg and connection count.")
]
WrkConnections = Annotated[str, typer.Option("--connections", help="wrk connection counts, comma-separated.")]
Repetitions = Annotated[
    int, typer.Option("--repetitions", min=1, help="Runs per leg; the median is reported.")
]


def _run_bench(name: str, **kwargs: Any) -> None:
    # Imported when run: each benchmark pulls in what its legs need (aiohttp, the bus, the shop).
    module = importlib.import_module(f"bench.{name}")
    try:
        result = module.run(**kwargs)
    except BenchError as exc:
        _fail(str(exc))
    _finish(result)


@app.command()
def proxy(
    json: JsonOption = False,
    duration: LoadSeconds = 10.0,
    connections: WrkConnections = "32,256",
    repetitions: Repetitions = 1,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up load before each leg.")] = 2.0,
    only: Annotated[
        str | None, typer.Option(help="Run only these legs: direct,edgeway,nginx,nginx_log,aiohttp.")
    ] = None,
) -> None:
    """edgeway vs nginx vs an aiohttp proxy, one worker each, wrk in one run."""
    legs = [part.strip() for part in only.split(",") if part.strip()] if only else None
    _run_bench(
        "proxy",
        json=json,
        duration=duration,
        connections=_parse_connections(connections),
        repetitions=repetitions,
        warmup=warmup,
        only=legs,
    )


@app.command()
def tls(
    json: JsonOption = False,
    duration: LoadSeconds = 10.0,
    connections: WrkConnections = "32",
    repetitions: Repetitions = 1,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up load before each leg.")] = 2.0,
    clients: Annotated[
        int, typer.Option(min=1, help="openssl s_time clients in parallel for the handshake legs.")
    ] = 4,
    only: Annotated[
        str | None,
        typer.Option(
            help="Run only these legs: edgeway,nginx,edgeway_plain,edgeway_handshakes,nginx_handshakes."
        ),
    ] = None,
) -> None:
    """HTTPS: edgeway vs nginx with the same certificate and ciphers, keep-alive requests and
    full handshakes per second, one worker each."""
    legs = [part.strip() for part in only.split(",") if part.strip()] if only else None
    _run_bench(
        "tls",
        json=json,
        duration=duration,
        connections=_parse_connections(connections),
        repetitions=repetitions,
        warmup=warmup,
        clients=clients,
        only=legs,
    )


@app.command()
def h2(
    json: JsonOption = False,
    duration: LoadSeconds = 10.0,
    clients: Annotated[int, typer.Option(min=1, help="h2load connections.")] = 4,
    streams: Annotated[int, typer.Option(min=1, help="Concurrent streams per connection (h2load -m).")] = 32,
    repetitions: Repetitions = 1,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up load before each leg.")] = 2.0,
    only: Annotated[str | None, typer.Option(help="Run only these legs: edgeway,nginx.")] = None,
) -> None:
    """HTTP/2 (h2c): edgeway vs nginx, h2load with many streams per connection, one worker each."""
    legs = [part.strip() for part in only.split(",") if part.strip()] if only else None
    _run_bench(
        "h2",
        json=json,
        duration=duration,
        clients=clients,
        streams=streams,
        repetitions=repetitions,
        warmup=warmup,
        only=legs,
    )


@app.command()
def callgrind(
    json: JsonOption = False,
    duration: Annotated[float, typer.Option(help="Seconds of counted load (wrk -c1).")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before counting starts.")] = 3.0,
    keep: Annotated[
        Path | None, typer.Option(help="Also write callgrind's output here (for callgrind_annotate).")
    ] = None,
    connections: Annotated[int, typer.Option(help="wrk connections (1: the per-request path alone).")] = 1,
    tracing: Annotated[
        float | None,
        typer.Option(help="Turn the gateway's tracing on at this sample ratio, exporting to the backend."),
    ] = None,
) -> None:
    """Instructions per proxied request: the gateway under callgrind, counted after warm-up."""
    _run_bench(
        "callgrind",
        json=json,
        duration=duration,
        warmup=warmup,
        keep=keep,
        connections=connections,
        tracing=tracing,
    )


@app.command()
def slow(
    json: JsonOption = False,
    duration: LoadSeconds = 10.0,
    connections: WrkConnections = "1000",
    delay_ms: Annotated[float, typer.Option(min=0, help="Delay the backend adds to every answer.")] = 50.0,
    repetitions: Repetitions = 1,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up load before each leg.")] = 2.0,
    only: Annotated[
        str | None, typer.Option(help="Run only these legs: direct,edgeway,nginx,aiohttp.")
    ] = None,
) -> None:
    """Many clients in front of a slow backend (50 ms): edgeway vs nginx vs aiohttp."""
    legs = [part.strip() for part in only.split(",") if part.strip()] if only else None
    _run_bench(
        "slow",
        json=json,
        duration=duration,
        connections=_parse_connections(connections),
        delay_ms=delay_ms,
        repetitions=repetitions,
        warmup=warmup,
        only=legs,
    )


@app.command()
def aggregate(
    json: JsonOption = False,
    duration: Annotated[float, typer.Option(help="Seconds of load per leg.")] = 10.0,
    connections: Annotated[
        str,
        typer.Option(
            help="wrk connection counts: p50 at the lowest (below saturation), req/s at the highest."
        ),
    ] = "8,256",
    delay_ms: Annotated[float, typer.Option(help="Delay each of the three backends adds.")] = 5.0,
    repetitions: Repetitions = 1,
) -> None:
    """An endpoint merging three delayed backends vs the same composition in aiohttp."""
    _run_bench(
        "aggregate",
        json=json,
        duration=duration,
        connections=_parse_connections(connections),
        delay_ms=delay_ms,
        repetitions=repetitions,
    )


@app.command()
def auth(
    json: JsonOption = False,
    duration: LoadSeconds = 10.0,
    connections: WrkConnections = "32",
    repetitions: Repetitions = 3,
) -> None:
    """The proxy benchmark with a JWT-protected route vs the same route unprotected."""
    _run_bench(
        "auth",
        json=json,
        duration=duration,
        connections=_parse_connections(connections),
        repetitions=repetitions,
    )


@app.command()
def revocation(
    json: JsonOption = False,
    tokens: Annotated[int, typer.Option(min=1, help="Tokens revoked per leg.")] = 20,
    poll_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between feed polls in the poll-only leg.")
    ] = 2.0,
) -> None:
    """Revoke -> 401 at two gateways: pushed over the bus vs polled from the feed."""
    _run_bench(
        "revocation",
        json=json,
        tokens=tokens,
        poll_interval=poll_interval,
    )


@app.command()
def push(
    json: JsonOption = False,
    clients: Annotated[int, typer.Option(min=1, help="WebSocket clients subscribed to one topic.")] = 100,
    messages: Annotated[int, typer.Option(min=1, help="Messages published on the bus.")] = 2000,
) -> None:
    """Push fan-out: NATS -> a gateway push route -> many WebSocket clients (deliveries/s)."""
    _run_bench("push_fanout", json=json, clients=clients, messages=messages)


@app.command()
def bus(
    json: JsonOption = False,
    events: Annotated[int, typer.Option(min=100, help="Events per leg.")] = 20_000,
    repetitions: Annotated[int, typer.Option(min=1, help="Runs per leg, alternating; medians.")] = 1,
    gc_freeze: Annotated[
        bool, typer.Option(help="gc.freeze() in every process of both legs once set up.")
    ] = True,
) -> None:
    """End-to-end events/s through outbox and idempotent consumer vs raw nats-py."""
    _run_bench(
        "bus",
        json=json,
        events=events,
        repetitions=repetitions,
        gc_freeze=gc_freeze,
    )


@app.command()
def shop(
    json: JsonOption = False,
    loads: Annotated[int, typer.Option(min=1, help="Times each screen is loaded per edge.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Screens loaded at once.")] = 8,
    rtt_ms: Annotated[float, typer.Option(min=0, help="Client round-trip time added to every call.")] = 0.0,
    pattern: Annotated[str, typer.Option(help="Edges to start: all | direct | gateway | bff.")] = "all",
) -> None:
    """The reference shop: the same screens Direct, through the API gateway and through the BFFs."""
    _run_bench(
        "shop",
        json=json,
        loads=loads,
        concurrency=concurrency,
        rtt_ms=rtt_ms,
        pattern=pattern,
    )


@app.command()
def patterns(
    json: JsonOption = False,
    rtt_ms: Annotated[
        float, typer.Option("--rtt-ms", min=0, max=1000, help="The client's round trip, emulated.")
    ] = 40.0,
    loads: Annotated[int, typer.Option(min=1, help="Times each screen is loaded per pattern.")] = 30,
) -> None:
    """The shop's home and product screens through Direct, gateway and BFFs at a client round trip."""
    _run_bench("patterns", json=json, rtt_ms=rtt_ms, loads=loads)


@app.command()
def faults(
    json: JsonOption = False,
    scale: Annotated[
        float, typer.Option(min=0.1, help="Stretch (>1) or shrink (<1) the scenario timelines (~30 s at 1).")
    ] = 1.0,
) -> None:
    """Gateway under faults: an instance killed, hanging, failing half its requests; live reloads."""
    _run_bench("faults", json=json, scale=scale)


@app.command()
def traffic(
    json: JsonOption = False,
    requests: Annotated[int, typer.Option(min=100, help="Requests on the 10/90 split.")] = 10_000,
    users: Annotated[int, typer.Option(min=1, help="Keys (users) on the sticky split.")] = 1_000,
    per_user: Annotated[int, typer.Option(min=2, help="Requests per key on the sticky split.")] = 10,
    rate: Annotated[
        float, typer.Option(min=1, help="Requests/s of the paced load in the mirror legs.")
    ] = 500.0,
    leg_seconds: Annotated[float, typer.Option(min=0.2, help="Seconds per mirror leg.")] = 2.0,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Rounds of the two mirror legs (ABBA); the figure is the median of their differences."
        ),
    ] = 12,
) -> None:
    """Traffic shifting: a 10/90 split's accuracy, sticky keys, what mirroring adds to p99, a
    progressive strangler's automatic rollback."""
    _run_bench(
        "traffic",
        json=json,
        requests=requests,
        users=users,
        per_user=per_user,
        rate=rate,
        leg_seconds=leg_seconds,
        rounds=rounds,
    )


@app.command("bus-faults")
def bus_faults(
    json: JsonOption = False,
    events: Annotated[int, typer.Option(min=100, help="Events flowing while the broker stops.")] = 50_000,
    small: Annotated[int, typer.Option(min=100, help="Events in the consumer and relay kills.")] = 10_000,
) -> None:
    """Broker and consumer faults while events flow: nothing lost, nothing applied twice."""
    _run_bench("bus_faults", json=json, events=events, small=small)


@app.command()
def cluster(
    json: JsonOption = False,
    baseline_s: Annotated[
        float, typer.Option("--baseline-s", min=1, help="Seconds of load before the first fault.")
    ] = 10.0,
    fault_s: Annotated[float, typer.Option("--fault-s", min=1, help="Seconds each fault lasts.")] = 6.0,
    calm_s: Annotated[
        float,
        typer.Option(
            "--calm-s", min=6, help="Seconds of load after each fault (recovery is measured in it)."
        ),
    ] = 15.0,
    checkouts: Annotated[float, typer.Option(min=0.5, help="Orders placed per second.")] = 4.0,
    reads: Annotated[float, typer.Option(min=0, help="Reads (products, an order) per second.")] = 8.0,
    subnet: Annotated[
        str, typer.Option(help="The nodes' /24; the root namespace takes .254.")
    ] = "10.77.0.0/24",
    keep: Annotated[bool, typer.Option(help="Keep the run's directory (configs, logs) at the end.")] = False,
    clean: Annotated[
        bool,
        typer.Option("--clean", help="Only remove what a killed run left (namespaces, links, databases)."),
    ] = False,
) -> None:
    """Three nodes in network namespaces: NATS R3, two gateways, the shop; kill and cut nodes (root)."""
    _run_bench(
        "cluster",
        json=json,
        baseline_s=baseline_s,
        fault_s=fault_s,
        calm_s=calm_s,
        checkouts_per_s=checkouts,
        reads_per_s=reads,
        subnet=subnet,
        keep=keep,
        clean=clean,
    )


RpcCalls = Annotated[int, typer.Option(min=10, help="Measured calls per leg and concurrency.")]
RpcWarmup = Annotated[int, typer.Option(min=0, help="Unmeasured calls before each measurement.")]
RpcConcurrency = Annotated[str, typer.Option(help="Concurrent callers, comma-separated.")]
RpcRepetitions = Annotated[int, typer.Option(min=1, help="Runs per leg, interleaved; medians.")]


@app.command()
def rpc(
    json: JsonOption = False,
    calls: RpcCalls = 3000,
    warmup: RpcWarmup = 300,
    concurrency: RpcConcurrency = "1,32",
    repetitions: RpcRepetitions = 3,
) -> None:
    """One small call between two services: JSON over HTTP/1.1 vs gRPC unary vs msgpack over NATS."""
    _run_bench(
        "rpc",
        json=json,
        calls=calls,
        warmup=warmup,
        concurrency=_parse_connections(concurrency),
        repetitions=repetitions,
    )


@app.command()
def grpc(
    json: JsonOption = False,
    calls: RpcCalls = 5000,
    warmup: RpcWarmup = 500,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Calls in flight on the client's one channel.")
    ] = 32,
    repetitions: RpcRepetitions = 3,
) -> None:
    """Unary gRPC calls through the gateway (h2c in, HTTP/2 out) vs straight to the service."""
    _run_bench(
        "grpc_gateway",
        json=json,
        calls=calls,
        warmup=warmup,
        concurrency=concurrency,
        repetitions=repetitions,
    )


@app.command("kit-client")
def kit_client(
    json: JsonOption = False,
    calls: RpcCalls = 3000,
    warmup: RpcWarmup = 300,
    concurrency: RpcConcurrency = "1,32",
    repetitions: RpcRepetitions = 3,
) -> None:
    """The service kit's HTTP client: httpx, httpx with sniffio, aiohttp, the engine, the kit's client."""
    _run_bench(
        "kit_client",
        json=json,
        calls=calls,
        warmup=warmup,
        concurrency=_parse_connections(concurrency),
        repetitions=repetitions,
    )


@app.command("event-payloads")
def event_payloads(
    json: JsonOption = False,
    events: Annotated[int, typer.Option(min=100, help="Events encoded and decoded per run.")] = 20_000,
    repetitions: Annotated[int, typer.Option(min=1, help="Runs; the median is reported.")] = 3,
) -> None:
    """One event as JSON, msgpack and protobuf: payload bytes, encode and decode CPU µs."""
    _run_bench("event_payloads", json=json, events=events, repetitions=repetitions)
