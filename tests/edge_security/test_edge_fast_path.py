"""Authenticated proxy routes on the callback path (ProxyAction.start, gateway/actions/proxy.py):
the auth filter decides there, in the engine's callback, with the same outcome as in a task."""

from __future__ import annotations

from typing import Any

import pytest
from edge_helpers import (
    auth_block,
    edge_config,
    gateway,
    issuer_for,
    jwks_server,
    problem,
    recording_backend,
    request,
)

from conftest import spies_on_engine
from edgeway.gateway.actions.proxy import ProxyAction
from edgeway.security.keys import KeyRing


@pytest.fixture
def callback_path(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """True for each request that reached the proxy's callback form: its filters all admitted at
    once, in the engine's callback (a request whose filter waits goes on in a task, and its
    action runs there)."""
    spies_on_engine()
    answers: list[bool] = []
    original = ProxyAction.start

    def spy(self: ProxyAction, *args: Any) -> Any:
        answers.append(True)
        return original(self, *args)

    monkeypatch.setattr(ProxyAction, "start", spy)
    return answers


async def test_a_valid_token_is_verified_and_forwarded_on_the_callback_path(
    callback_path: list[bool],
) -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", roles=["reader"]).token
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(
            port, [{"match": {"path": "/**"}, "auth": {"roles": {"any": ["reader"]}}}], auth_block(jwks.url)
        )
        async with gateway(cfg) as (gw, _):
            spoofed = {"authorization": f"Bearer {token}", "X-Edgeway-Subject": "root"}
            statuses = [(await request(gw, "GET", f"/x/{i}", spoofed))[0] for i in range(3)]
            denied, _, body = await request(gw, "GET", "/y", {"authorization": "Bearer not.a.token"})
    assert statuses == [200, 200, 200]
    # The refused one never reaches the action: the auth filter refused it at once, and the
    # runtime answered it there, with no task either.
    assert callback_path == [True, True, True]
    assert denied == 401
    assert problem(body)["reason"] == "malformed"
    assert len(seen.requests) == 3
    for _, headers, _ in seen.requests:
        assert headers[b"x-edgeway-subject"] == b"alice"  # the verified subject, never the spoofed one


async def test_a_token_signed_by_a_key_rotated_in_later_goes_to_the_task_path(
    callback_path: list[bool],
) -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            ring.rotate(overlap=600)
            token = issuer_for(ring).issue("alice").token
            first, _, _ = await request(gw, "GET", "/x", {"authorization": f"Bearer {token}"})
            second, _, _ = await request(gw, "GET", "/x", {"authorization": f"Bearer {token}"})
    assert (first, second) == (200, 200)
    # Unknown key id: the filter waits for the key fetch, so that request goes on in a task
    # (its action runs there, never reaching ProxyAction); once fetched, the callback path.
    assert callback_path == [True]
    assert len(seen.requests) == 2


async def test_several_filters_that_admit_at_once_keep_the_request_on_the_callback_path(
    callback_path: list[bool],
) -> None:
    # CORS and auth on one route, both deciding in the callback: no filter forces a task.
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", roles=["reader"]).token
    route = {
        "match": {"path": "/**"},
        "auth": {"roles": {"any": ["reader"]}},
        "cors": {"allow_origins": ["https://app.example"]},
    }
    async with (
        recording_backend() as (port, seen),
        jwks_server(ring) as jwks,
        gateway(edge_config(port, [route], auth_block(jwks.url))) as (gw, _),
    ):
        sent = {"authorization": f"Bearer {token}", "origin": "https://app.example"}
        answers = [await request(gw, "GET", f"/x/{i}", sent) for i in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert callback_path == [True, True, True]
    for _, headers, _ in answers:
        assert headers["access-control-allow-origin"] == ["https://app.example"]
    assert len(seen.requests) == 3
