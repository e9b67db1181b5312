"""``edgeway bus asyncapi``: an AsyncAPI 2.6 document from a service's event classes and bus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgeway.bus.cli import app

runner = CliRunner()

SHOP = '''
from pydantic import BaseModel
from edgeway.bus.bus import EventBus
from edgeway.bus.events import Event
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.transport import ChannelConfig


class Address(BaseModel):
    city: str


class OrderPlaced(Event):
    """An order was placed and paid.

    More detail that stays out of the summary.
    """

    channel = "orders"
    event_type = "order.placed.v1"
    key_field = "order_id"
    order_id: str
    total_cents: int
    ship_to: Address | None = None


class OrderCancelled(Event):
    channel = "orders"
    event_type = "order.cancelled.v1"
    order_id: str


class StockLow(Event):
    channel = "stock"
    event_type = "stock.low.v1"
    sku: str


ORDERS = ChannelConfig("orders", ttl=3600, max_deliver=7)
STOCK = ChannelConfig("stock", ttl=60)

bus = EventBus(MemoryTransport(), channels=[ORDERS])


@bus.subscribe(OrderPlaced, group="billing")
async def bill(event: OrderPlaced) -> None: ...


@bus.subscribe(OrderCancelled, group="billing")
async def refund(event: OrderCancelled) -> None: ...


@bus.subscribe(OrderPlaced, group="shipping")
async def ship(event: OrderPlaced) -> None: ...
'''


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"shop_events_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(SHOP)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_document_describes_every_channel_message_schema_and_group(shop: str) -> None:
    result = runner.invoke(
        app,
        ["asyncapi", shop, "--bus", f"{shop}:bus", "--title", "shop", "--url", "nats://nats:4222", "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["asyncapi"] == "2.6.0"
    assert doc["info"] == {"title": "shop", "version": "1.0.0"}
    assert doc["servers"] == {"default": {"url": "nats://nats:4222", "protocol": "nats"}}
    assert set(doc["channels"]) == {"orders", "stock"}
    orders = doc["channels"]["orders"]
    assert [m["$ref"] for m in orders["subscribe"]["message"]["oneOf"]] == [
        "#/components/messages/order.cancelled.v1",
        "#/components/messages/order.placed.v1",
    ]
    assert orders["subscribe"]["x-edgeway-groups"] == ["billing", "shipping"]
    assert orders["x-edgeway-channel"]["ttl"] == 3600
    assert orders["x-edgeway-channel"]["max_deliver"] == 7
    assert orders["x-edgeway-nats-subject"] == "ew.orders.e.*"
    placed = doc["components"]["messages"]["order.placed.v1"]
    assert placed["title"] == "OrderPlaced"
    assert placed["summary"] == "An order was placed and paid."
    assert placed["x-edgeway-key-field"] == "order_id"
    payload = resolve(doc, placed["payload"]["$ref"])
    assert set(payload["required"]) == {"order_id", "total_cents"}
    assert "city" in doc["components"]["schemas"]["Address"]["properties"]  # nested models too
    assert "traceparent" in resolve(doc, placed["headers"]["$ref"])["properties"]
    for ref in refs(doc):
        resolve(doc, ref)  # every reference points into the document


def test_yaml_by_default_and_rabbitmq_names_as_amqp_bindings(shop: str, tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = runner.invoke(
        app, ["asyncapi", shop, "--url", "amqp://guest:guest@mq:5672/", "--prefix", "shop", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["servers"]["default"]["protocol"] == "amqp"
    binding = doc["channels"]["orders"]["bindings"]["amqp"]
    assert binding["exchange"] == {
        "name": "shop.orders",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
    }
    assert "x-edgeway-groups" not in doc["channels"]["orders"]["subscribe"]  # no bus given
    assert doc["channels"]["stock"]["x-edgeway-channel"]["ttl"] == 60  # the module's ChannelConfig


def test_mistakes_are_named_with_what_to_do(shop: str) -> None:
    missing = runner.invoke(app, ["asyncapi", "no_such_module_here"])
    assert missing.exit_code == 1
    assert "cannot import 'no_such_module_here'" in missing.output
    no_events = runner.invoke(app, ["asyncapi", "json"])
    assert "no event classes to describe" in no_events.output
    not_a_bus = runner.invoke(app, ["asyncapi", shop, "--bus", f"{shop}:OrderPlaced"])
    assert "not an EventBus" in not_a_bus.output
    bad_form = runner.invoke(app, ["asyncapi", shop, "--bus", shop])
    assert "give module:attribute" in bad_form.output
