"""edgeway.service.Service: a user's service gets its database, event bus, outbox relay and a
verifier with revocations in a few lines, configured from the kit's settings. The bus is the NATS
on 4222 under a prefix of the test's own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import Column, MetaData, String, Table, func, select

from conftest import delete_nats_streams, require
from edgeway.bus.events import Event
from edgeway.bus.transport import ChannelConfig
from edgeway.security.revocation import TokenRevokedEvent
from edgeway.service import Service, ServiceSettings, kit_of, service_of
from edgeway.service.identity import JwksVerifier


class NoteAdded(Event):
    channel = "notes"
    event_type = "notes.added.v1"
    key_field = "id"
    id: str
    text: str


def notes_service(settings: ServiceSettings) -> tuple[Service, FastAPI]:
    # What docs/service-kit.md shows a user: a table, a channel, a transaction that writes both.
    metadata = MetaData()
    notes = Table("notes", metadata, Column("id", String(32), primary_key=True), Column("text", String(200)))
    service = Service("notes", metadata, settings, channels=[ChannelConfig("notes")])
    app = service.create_app()

    @app.post("/notes/{note_id}", status_code=201)
    async def add(note_id: str, text: str, request: Request) -> dict[str, int]:
        svc = service_of(request, Service)
        async with svc.transaction() as session:
            await session.execute(notes.insert().values(id=note_id, text=text))
            await svc.outbox.add(session, NoteAdded(id=note_id, text=text))
            count = await session.scalar(select(func.count()).select_from(notes))
        return {"notes": int(count or 0)}

    return service, app


@pytest.fixture
async def settings(tmp_path: Path) -> AsyncIterator[ServiceSettings]:
    require("nats")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield ServiceSettings(data_dir=tmp_path, nats_url="nats://127.0.0.1:4222", bus_prefix=prefix)
    await delete_nats_streams(prefix)


async def test_a_committed_change_reaches_the_bus_through_the_outbox(
    settings: ServiceSettings, tmp_path: Path
) -> None:
    service, app = notes_service(settings)
    received: asyncio.Queue[NoteAdded] = asyncio.Queue()

    @service.bus.subscribe(NoteAdded, group="notes-test")
    async def on_added(event: NoteAdded) -> None:
        await received.put(event)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
            response = await client.post("/notes/n1", params={"text": "hello"})
            assert response.status_code == 201, response.text
            assert response.json() == {"notes": 1}
            event = await asyncio.wait_for(received.get(), 10)
            assert (event.id, event.text) == ("n1", "hello")
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert "database" in ready.text
    # The default database: SQLite under data_dir, named after the service.
    assert (tmp_path / "notes.db").is_file()


async def test_a_revocation_pushed_over_the_bus_reaches_the_verifiers_deny_list(
    settings: ServiceSettings,
) -> None:
    configured = settings.model_copy(
        update={"jwks_url": "http://127.0.0.1:9/.well-known/jwks.json", "revocations_url": ""}
    )
    service = Service("listener", settings=configured, channels=[])
    assert isinstance(service.verifier, JwksVerifier)
    app = service.create_app()
    async with app.router.lifespan_context(app):
        assert kit_of(app).identity.verifier is service.verifier
        await service.bus.publish(TokenRevokedEvent(jti="jti-1", exp=time.time() + 60))
        deadline = time.monotonic() + 10
        while "jti-1" not in service.verifier.revocations:
            assert time.monotonic() < deadline, "the revocation never reached the deny-list"
            await asyncio.sleep(0.05)


def test_a_service_without_a_database_or_bus_says_what_to_pass() -> None:
    service = Service("plain", settings=ServiceSettings())
    with pytest.raises(RuntimeError, match="pass metadata"):
        _ = service.db
    with pytest.raises(RuntimeError, match="pass channels"):
        _ = service.bus
    with pytest.raises(RuntimeError, match="create_app"):
        _ = service.kit
