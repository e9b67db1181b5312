"""Push fed by the event bus, end to end: a real FastAPI service publishes with edgeway.bus to the
embedded NATS (a free port) or RabbitMQ, real gateways follow the channel, real WebSocket
clients receive. Includes the "send 10 emails and tell me when done" case exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from cache_push_helpers import http, running_gateway, with_test_identity
from fastapi import FastAPI, Request
from push_helpers import hub
from servers import serve

from conftest import dead_port, require
from edgeway.bus.bus import EventBus
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.events import Event
from edgeway.bus.nats import NatsTransport


class EmailSent(Event):
    channel = "jobs"
    event_type = "job.progress.v1"
    key_field = "job_id"
    job_id: str
    owner: str
    sent: int
    total: int


class JobDone(Event):
    channel = "jobs"
    event_type = "job.done.v1"
    key_field = "job_id"
    job_id: str
    owner: str
    result: str


class Unrelated(Event):
    channel = "jobs"
    event_type = "job.audit.v1"
    job_id: str
    owner: str


def emails_service(bus: EventBus) -> FastAPI:
    """POST /jobs/emails answers 202 with a job id at once; the emails go out afterwards, each
    one reported on the bus, then the job's completion."""
    app = FastAPI()
    tasks: set[asyncio.Task[None]] = set()

    async def send_all(job_id: str, owner: str, count: int) -> None:
        await bus.publish(Unrelated(job_id=job_id, owner=owner))  # a type the gateway does not push
        for n in range(1, count + 1):
            await asyncio.sleep(0.01)  # "sending" one email
            await bus.publish(EmailSent(job_id=job_id, owner=owner, sent=n, total=count))
        await bus.publish(JobDone(job_id=job_id, owner=owner, result=f"{count} emails sent"))

    @app.post("/jobs/emails", status_code=202)
    async def start_job(request: Request) -> dict[str, Any]:
        body = await request.json()
        owner = request.headers["x-test-user"]  # in production: X-Edgeway-Subject from the gateway
        job_id = uuid.uuid4().hex[:12]
        task = asyncio.create_task(send_all(job_id, owner, len(body["to"])))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return {"job_id": job_id, "topic": f"jobs/{job_id}"}

    return app


def gateway_cfg(service_url: str, bus: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "bff",
        "services": {"jobs": {"instances": [service_url]}},
        "routes": [
            {
                "id": "jobs",
                "match": {"path": "/api/jobs/**"},
                "proxy": {"service": "jobs", "strip_prefix": "/api"},
            },
            {
                "id": "push",
                "match": {"path": "/push"},
                "push": {"topics": [{"pattern": "jobs/{id}", "allow": "owner", "owner_field": "owner"}]},
            },
        ],
        "push": {
            "bus": {
                **bus,
                "channels": [
                    {"channel": "jobs", "topic": "jobs/{job_id}", "types": ["job.progress.v1", "job.done.v1"]}
                ],
            }
        },
    }


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
        yield server.url


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return out


def ws_connect(port: int, user: str) -> Any:
    return websockets.connect(
        f"ws://127.0.0.1:{port}/push", additional_headers={"X-Test-User": user}, ping_interval=None
    )


async def test_send_ten_emails_and_tell_me_when_done(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with_test_identity(monkeypatch)
    bus = EventBus(NatsTransport(nats_url, prefix="mail"))
    async with bus, serve(emails_service(bus)) as service_url:
        cfg = gateway_cfg(service_url, {"transport": "nats", "url": nats_url, "prefix": "mail"})
        async with (
            running_gateway(cfg) as g,
            ws_connect(g.port, "alice") as alice,
            ws_connect(g.port, "bob") as bob,
        ):
            # 1. the client asks for the work and gets 202 with a job id at once
            recipients = [f"user{n}@example.com" for n in range(10)]
            status, _, body = await http(
                g.port,
                "POST",
                "/api/jobs/emails",
                {"X-Test-User": "alice", "Content-Type": "application/json"},
                json.dumps({"to": recipients, "subject": "hello"}).encode(),
            )
            assert status == 202, body
            job = json.loads(body)
            # 2. it subscribes to the job's topic (replay: what was pushed before it asked)
            await alice.send(json.dumps({"type": "subscribe", "topic": job["topic"], "replay": True}))
            assert await recv(alice) == {"type": "subscribed", "topic": job["topic"]}
            await bob.send(json.dumps({"type": "subscribe", "topic": job["topic"], "replay": True}))
            assert (await recv(bob))["type"] == "subscribed"  # allowed, but receives nothing of alice's
            # 3. progress and completion arrive over the socket, in order, once each
            events: list[dict[str, Any]] = []
            while not events or events[-1]["event"] != "job.done.v1":
                events.append(await recv(alice))
            await bob.send(json.dumps({"type": "ping"}))
            assert await recv(bob) == {"type": "pong"}
    progress = [e["data"]["sent"] for e in events if e["event"] == "job.progress.v1"]
    assert progress == list(range(1, 11))
    assert events[-1]["data"]["result"] == "10 emails sent"
    assert {e["topic"] for e in events} == {job["topic"]}
    assert len({e["id"] for e in events}) == 11  # the bus event ids, one per message


async def test_every_gateway_process_sees_every_event(nats_url: str) -> None:
    """Followers, not a consumer group: two gateways on one channel both push each event."""
    cfg = gateway_cfg("http://127.0.0.1:9", {"transport": "nats", "url": nats_url, "prefix": "fan"})
    cfg["routes"][1]["push"]["topics"] = [{"pattern": "jobs/{id}", "allow": "anyone"}]
    bus = EventBus(NatsTransport(nats_url, prefix="fan"))
    async with bus, running_gateway(cfg) as one, running_gateway(cfg) as two:
        await bus.publish(EmailSent(job_id="j1", owner="x", sent=1, total=1))
        await bus.publish(Unrelated(job_id="j1", owner="x"))  # not in `types`
        await bus.publish(EmailSent(job_id="j1", owner="x", sent=2, total=2))
        for g in (one, two):
            for _ in range(100):
                if len(hub(g).replay("jobs/j1", None)) == 2:
                    break
                await asyncio.sleep(0.02)
        kept = [[m.id for m in hub(g).replay("jobs/j1", None)] for g in (one, two)]
    assert len(kept[0]) == 2
    assert kept[0] == kept[1]  # the same ids on both: a client can resume on either


class EmailSentPacked(EmailSent):
    """The same event from a producer that publishes msgpack."""

    content_type = "application/msgpack"


async def test_a_msgpack_event_is_pushed_as_json_and_one_it_cannot_read_is_skipped(nats_url: str) -> None:
    from edgeway.bus.events import H_CONTENT_TYPE, Envelope, new_event_id

    cfg = gateway_cfg("http://127.0.0.1:9", {"transport": "nats", "url": nats_url, "prefix": "pack"})
    cfg["routes"][1]["push"]["topics"] = [{"pattern": "jobs/{id}", "allow": "anyone"}]
    bus = EventBus(NatsTransport(nats_url, prefix="pack"))
    async with bus, running_gateway(cfg) as g, ws_connect(g.port, "dan") as ws:
        await ws.send(json.dumps({"type": "subscribe", "topic": "jobs/m1"}))
        assert (await recv(ws))["type"] == "subscribed"
        # a protobuf payload: the gateway has no message type to read it with, so it is skipped
        unreadable = Envelope(
            new_event_id(),
            "job.progress.v1",
            "jobs",
            0.0,
            b"\x0a\x02m1",
            "m1",
            {H_CONTENT_TYPE: "application/protobuf"},
        )
        await bus.publish_envelope(unreadable)
        await bus.publish(EmailSentPacked(job_id="m1", owner="dan", sent=1, total=2))
        await bus.publish(EmailSent(job_id="m1", owner="dan", sent=2, total=2))
        first, second = await recv(ws), await recv(ws)
    assert [(m["event"], m["data"]["sent"]) for m in (first, second)] == [
        ("job.progress.v1", 1),
        ("job.progress.v1", 2),
    ]
    assert first["data"] == {"job_id": "m1", "owner": "dan", "sent": 1, "total": 2}


@pytest.fixture
def rabbit_prefix() -> str:
    require("rabbitmq")
    return "p" + uuid.uuid4().hex[:10]


async def test_events_on_rabbitmq_reach_websocket_clients(rabbit_prefix: str) -> None:
    from edgeway.bus.rabbit import RabbitTransport

    url = "amqp://guest:guest@127.0.0.1:5672/"
    transport = RabbitTransport(url, prefix=rabbit_prefix)
    bus = EventBus(transport)
    cfg = gateway_cfg("http://127.0.0.1:9", {"transport": "rabbitmq", "url": url, "prefix": rabbit_prefix})
    cfg["routes"][1]["push"]["topics"] = [{"pattern": "jobs/{id}", "allow": "anyone"}]
    try:
        async with bus, running_gateway(cfg) as g, ws_connect(g.port, "carol") as ws:
            await ws.send(json.dumps({"type": "subscribe", "topic": "jobs/r1"}))
            assert (await recv(ws))["type"] == "subscribed"
            await bus.publish(EmailSent(job_id="r1", owner="carol", sent=3, total=5))
            message = await recv(ws)
    finally:
        await transport.teardown()
    assert (message["event"], message["data"]["sent"]) == ("job.progress.v1", 3)


async def test_an_unreachable_broker_fails_the_gateway_start_clearly() -> None:
    from edgeway.gateway.core.errors import GatewayError

    dead = {"transport": "nats", "url": f"nats://127.0.0.1:{dead_port()}", "connect_timeout": "1s"}
    cfg = gateway_cfg("http://127.0.0.1:9", dead)
    with pytest.raises(GatewayError, match=r"cannot connect to NATS .* within 1s"):
        async with running_gateway(cfg):
            pass
