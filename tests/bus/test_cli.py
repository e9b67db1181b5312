"""``edgeway bus dlq list|show|replay`` against a real NATS."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from conftest import delete_nats_streams, require
from edgeway.bus.bus import EventBus
from edgeway.bus.cli import app
from edgeway.bus.dlq import DeadLetters
from edgeway.bus.events import Event
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import ChannelConfig

from .helpers import order_events

URL = "nats://127.0.0.1:4222"


async def _make_dead_letter(prefix: str, placed: type[Event]) -> None:
    config = ChannelConfig(placed.channel, max_deliver=1)

    async def fail(event: Event) -> None:
        raise PermissionError("account frozen")

    bus = EventBus(NatsTransport(URL, prefix=prefix), channels=[config])
    bus.add_handler(placed, fail, group="billing")
    async with bus:
        await bus.publish(placed(order_id="o-7"))
        dlq = DeadLetters(bus.transport, config)
        for _ in range(200):
            if await dlq.list():
                return
            await asyncio.sleep(0.05)
    raise AssertionError("no dead letter appeared")


@pytest.fixture(autouse=True)
def _no_json_log_lines_on_stdout() -> Iterator[None]:
    """The command's stdout only: an earlier test in this worker may have set up the kit's JSON
    logging (a process-wide handler writing to stdout), which the command itself never does."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [h for h in saved if not getattr(h, "_edgeway_json_handler", False)]
    yield
    root.handlers = saved


def test_dlq_commands_list_show_and_replay_a_dead_letter() -> None:
    require("nats")
    token = uuid.uuid4().hex[:8]
    prefix = "c" + token
    placed, _ = order_events(f"orders-{token}")
    runner = CliRunner()
    try:
        asyncio.run(_make_dead_letter(prefix, placed))
        common = ["--channel", placed.channel, "--url", URL, "--prefix", prefix]

        listed = runner.invoke(app, ["dlq", "list", *common, "--json"])
        assert listed.exit_code == 0, listed.output
        (line,) = listed.output.strip().splitlines()
        letter = json.loads(line)
        assert letter["group"] == "billing"
        assert "PermissionError: account frozen" in letter["reason"]

        shown = runner.invoke(app, ["dlq", "show", letter["id"], *common])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["payload"] == {"order_id": "o-7", "n": 0}

        replayed = runner.invoke(app, ["dlq", "replay", letter["id"], *common])
        assert replayed.exit_code == 0, replayed.output
        assert "1 replayed" in replayed.output
        assert "no dead letters" in runner.invoke(app, ["dlq", "list", *common]).output

        missing = runner.invoke(app, ["dlq", "show", "999999", *common])
        assert missing.exit_code == 1
        assert "no dead letter '999999'" in missing.output
    finally:
        asyncio.run(delete_nats_streams(prefix.upper()))


def test_dlq_commands_refuse_without_a_broker_url() -> None:
    result = CliRunner().invoke(app, ["dlq", "list", "--channel", "orders"], env={"EDGEWAY_BUS_URL": ""})
    assert result.exit_code == 1
    assert "no broker URL" in result.output
