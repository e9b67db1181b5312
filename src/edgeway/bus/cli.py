"""``edgeway bus …``: run the embedded NATS, and list/show/replay dead letters.

The broker is chosen by URL scheme (``nats://`` or ``amqp://``), from ``--url`` or the
``EDGEWAY_BUS_URL`` environment variable.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from edgeway.bus.brokers import transport_for
from edgeway.bus.codecs import payload_value
from edgeway.bus.errors import BusError, EventDecodeError
from edgeway.bus.transport import ChannelConfig, DeadLetter
from edgeway.extras import MissingExtraError

app = typer.Typer(no_args_is_help=True, help="Event bus tools: embedded NATS, dead letters, AsyncAPI.")
dlq_app = typer.Typer(no_args_is_help=True, help="List, inspect and replay dead letters.")
app.add_typer(dlq_app, name="dlq")

T = TypeVar("T")

URL_OPTION = typer.Option(
    None,
    "--url",
    envvar="EDGEWAY_BUS_URL",
    help="Broker URL: nats://host:4222 or amqp://user:pass@host:5672/",
)
PREFIX_OPTION = typer.Option("ew", "--prefix", help="Name prefix the services use (stream/exchange names).")
CHANNEL_OPTION = typer.Option(..., "--channel", "-c", help="The channel (stream) name, e.g. orders.")


@app.command("nats")
def nats_server(
    port: int = typer.Option(4222, "--port", "-p", help="Client port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    data_dir: Path = typer.Option(Path(".edgeway/nats"), "--data-dir", help="JetStream storage directory."),
) -> None:
    """Run the embedded nats-server with JetStream in the foreground (Ctrl-C stops it)."""
    from edgeway.bus.embedded import EmbeddedNats

    server = EmbeddedNats(port=port, host=host, data_dir=data_dir)
    try:
        server.start()
    except BusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"nats-server with JetStream on {server.url}, data in {data_dir}")
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    raise typer.Exit(code)


def _with_dlq(url: str | None, prefix: str, channel: str, action: Callable[[Any], Awaitable[T]]) -> T:
    from edgeway.bus.dlq import DeadLetters

    async def run() -> T:
        transport = transport_for(url, prefix)
        await transport.connect()
        try:
            return await action(DeadLetters(transport, ChannelConfig(channel)))
        finally:
            await transport.close()

    try:
        return asyncio.run(run())
    except BusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _as_dict(letter: DeadLetter, payload: bool) -> dict[str, Any]:
    envelope = letter.envelope
    out: dict[str, Any] = {
        "id": letter.id,
        "group": letter.group,
        "reason": letter.reason,
        "dead_at": letter.dead_at,
        "message_id": envelope.id,
        "type": envelope.type,
        "attempts": envelope.attempt,
        "published_at": envelope.time,
    }
    if payload:
        out["headers"] = dict(envelope.headers)
        out["content_type"] = envelope.content_type
        try:
            out["payload"] = payload_value(envelope)  # JSON and msgpack as values
        except (EventDecodeError, MissingExtraError):
            out["payload_base64"] = base64.b64encode(envelope.payload).decode()
    return out


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@dlq_app.command("list")
def dlq_list(
    channel: str = CHANNEL_OPTION,
    group: str | None = typer.Option(None, "--group", "-g", help="Only this consumer group's."),
    url: str | None = URL_OPTION,
    prefix: str = PREFIX_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """List the dead letters of a channel, oldest first."""
    letters: list[DeadLetter] = _with_dlq(url, prefix, channel, lambda d: d.list(group))
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(_as_dict(letter, payload=False)))
        return
    if not letters:
        typer.echo(f"no dead letters on {channel}")
        return
    typer.echo(f"{'ID':<32} {'GROUP':<16} {'TYPE':<24} {'DEAD AT':<19}  REASON")
    for letter in letters:
        reason = letter.reason if len(letter.reason) <= 80 else letter.reason[:77] + "..."
        when = _when(letter.dead_at)
        typer.echo(f"{letter.id:<32} {letter.group:<16} {letter.envelope.type:<24} {when:<19}  {reason}")


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: str = typer.Argument(..., help="The id `dlq list` shows."),
    channel: str = CHANNEL_OPTION,
    url: str | None = URL_OPTION,
    prefix: str = PREFIX_OPTION,
) -> None:
    """Show one dead letter: reason, headers and payload."""
    letter: DeadLetter = _with_dlq(url, prefix, channel, lambda d: d.get(dead_letter_id))
    typer.echo(json.dumps(_as_dict(letter, payload=True), indent=2))


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_id: str | None = typer.Argument(None, help="The id to replay; omit with --all."),
    channel: str = CHANNEL_OPTION,
    replay_all: bool = typer.Option(False, "--all", help="Replay every dead letter (of --group if given)."),
    group: str | None = typer.Option(None, "--group", "-g", help="With --all: only this group's."),
    url: str | None = URL_OPTION,
    prefix: str = PREFIX_OPTION,
) -> None:
    """Send dead letters back to the group that failed them, then remove them."""
    if dead_letter_id is not None and not replay_all:
        one = dead_letter_id
        done = [_with_dlq(url, prefix, channel, lambda d: d.replay(one))]
    elif dead_letter_id is None and replay_all:
        done = _with_dlq(url, prefix, channel, lambda d: d.replay_all(group))
    else:
        typer.echo("error: give either a dead letter id or --all", err=True)
        raise typer.Exit(2)
    for letter in done:
        typer.echo(f"replayed {letter.id} ({letter.envelope.type}) to group {letter.group}")
    typer.echo(f"{len(done)} replayed")


@app.command("asyncapi")
def asyncapi(
    modules: list[str] = typer.Argument(
        ..., help="Modules whose event classes to describe, e.g. orders.events."
    ),
    bus: str | None = typer.Option(
        None, "--bus", help="module:attribute of an EventBus: adds its channel settings and consumer groups."
    ),
    title: str | None = typer.Option(None, "--title", help="Document title (default: the first module)."),
    version: str = typer.Option("1.0.0", "--version", help="The API's version (info.version)."),
    url: str | None = typer.Option(
        None, "--url", help="Broker URL for the servers section (nats:// or amqp://)."
    ),
    prefix: str = PREFIX_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print an AsyncAPI 2.6 document of the events: channels, messages, payload schemas, headers."""
    from edgeway.bus import asyncapi as spec

    try:
        found, configs = spec.scan(modules)
        event_bus = _load_bus(bus) if bus is not None else None
        document = spec.document(
            found,
            title=title or modules[0],
            version=version,
            bus=event_bus,
            channels=configs,
            server=url,
            prefix=prefix,
        )
    except BusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        text = json.dumps(document, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


def _load_bus(target: str) -> Any:
    from edgeway.bus.bus import EventBus

    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise BusError(f"--bus {target!r}: give module:attribute, e.g. orders.app:bus")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise BusError(f"--bus {target!r}: {exc}") from exc
    if not isinstance(found, EventBus):
        raise BusError(f"--bus {target!r} is a {type(found).__name__}, not an EventBus")
    return found
